;; sb_secret_b - starts with 8 pages (more than sb_secret_a's 1, and its
;; 4 after growing), grows to 16 and counts the 8-byte words that hold
;; sb_secret_a's secret anywhere in its memory; returns that count (must be 0).
(module
  (memory (export "memory") 8 64)
  (func (export "handle") (result i32)
    (local $i i32) (local $hits i32)
    (if (i32.eq (memory.grow (i32.const 8)) (i32.const -1)) (then unreachable))
    (loop $l
      (if (i64.eq (i64.load (local.get $i)) (i64.const 0x5445524345532d4c))
        (then (local.set $hits (i32.add (local.get $hits) (i32.const 1)))))
      (local.set $i (i32.add (local.get $i) (i32.const 8)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 1048576))))
    (local.get $hits)))
