;; Imports a function the Cloister ABI does not offer.
;; Expect: "import cloister.fork is not part of the Cloister ABI"
(module
  (import "cloister" "fork" (func $fork (result i32)))
  (memory (export "memory") 1)
  (func (export "handle") (result i32) (call $fork)))
