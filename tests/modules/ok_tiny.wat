;; The smallest module Cloister runs: a memory and a handle, no imports.
(module
  (memory (export "memory") 1)
  (func (export "handle") (result i32) (i32.const 7)))
