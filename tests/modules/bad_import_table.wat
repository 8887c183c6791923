;; Imports a table: the node offers none.
(module
  (import "env" "table" (table 1 funcref))
  (memory (export "memory") 1)
  (func (export "handle") (result i32) (i32.const 0)))
