;; Imports a global: the node offers none.
(module
  (import "env" "g" (global i32))
  (memory (export "memory") 1)
  (func (export "handle") (result i32) (global.get 0)))
