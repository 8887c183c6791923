;; Exports both _start and _initialize: a command and a reactor at once.
(module
  (memory (export "memory") 1)
  (func (export "_start"))
  (func (export "_initialize"))
  (func (export "handle") (result i32) (i32.const 0)))
