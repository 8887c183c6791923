;; Exports "init" with a parameter: init is () -> ().
(module
  (memory (export "memory") 1)
  (func (export "init") (param i32))
  (func (export "handle") (result i32) (i32.const 0)))
