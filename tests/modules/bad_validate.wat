;; Structurally fine (passes module.c) but its code does not validate:
;; handle returns an i64 where the type says i32.  wasm2c refuses it, and
;; the deploy error must carry wasm2c's message.
(module
  (memory (export "memory") 1)
  (func (export "handle") (result i32) (i64.const 0)))
