;; Has a start section: code that would run while an instance is created.
(module
  (memory (export "memory") 1)
  (func $boot (i32.store (i32.const 0) (i32.const 1)))
  (start $boot)
  (func (export "handle") (result i32) (i32.load (i32.const 0))))
