;; sb_secret_a - writes a secret over its whole memory, after growing it
;; from 1 to 4 pages (the repurposed-slot leak test, GHSA-wh6w-3828-g9qf).
(module
  (memory (export "memory") 1 64)
  (func (export "handle") (result i32)
    (local $i i32)
    (drop (memory.grow (i32.const 3)))
    (loop $l
      (i64.store (local.get $i) (i64.const 0x5445524345532d4c))   ;; "L-SECRET"
      (local.set $i (i32.add (local.get $i) (i32.const 8)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 262144))))
    (i32.const 0)))
