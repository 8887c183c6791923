;; Imports from a host module that does not exist (AssemblyScript's env.abort).
;; Expect: "import env.abort is not part of the Cloister ABI"
(module
  (import "env" "abort" (func $abort (param i32 i32 i32 i32)))
  (memory (export "memory") 1)
  (func (export "handle") (result i32) (i32.const 0)))
