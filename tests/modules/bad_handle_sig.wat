;; handle takes a parameter: the ABI's handle is () -> i32.
(module
  (memory (export "memory") 1)
  (func (export "handle") (param i32) (result i32) (local.get 0)))
