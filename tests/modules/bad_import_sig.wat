;; Imports an ABI function with the wrong signature.
;; Expect: "import cloister.kv_get has type (i32) -> i32, the ABI expects (i32 i32 i32 i32 i32) -> i64"
(module
  (import "cloister" "kv_get" (func $get (param i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "handle") (result i32) (call $get (i32.const 0))))
