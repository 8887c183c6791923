;; A WASI command-model module: exports _start (as clang's command model
;; does) next to handle, imports from both host modules.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "cloister" "output" (func $output (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 2 16)
  (data (i32.const 16) "command says hi\n")
  (func (export "_start"))
  (func (export "handle") (result i32)
    (drop (call $output (i32.const 16) (i32.const 16)))
    (i32.const 0)))
