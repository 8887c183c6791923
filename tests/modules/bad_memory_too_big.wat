;; Asks for 2000 pages (125 MiB) of memory at start, above the default
;; per-instance cap of 1024 pages (64 MiB).
(module
  (memory (export "memory") 2000)
  (func (export "handle") (result i32) (i32.const 0)))
