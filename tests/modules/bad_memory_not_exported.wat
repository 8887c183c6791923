;; Defines a memory but does not export it as "memory".
(module
  (memory (export "mem") 1)
  (func (export "handle") (result i32) (i32.const 0)))
