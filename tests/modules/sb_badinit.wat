;; sb_badinit - an `init` export that fails on request (tests/unit/runtime/test_sandbox.c).
;; init reads a u32 selector from its init call's input and echoes it to
;; that call's output: 1 unreachable, 2 infinite loop, 3 proc_exit(5),
;; 4 proc_exit(0), else returns.  handle outputs the selector init saw.
(module
  (import "cloister" "input" (func $input (param i32 i32) (result i32)))
  (import "cloister" "output" (func $output (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "init")
    (local $sel i32)
    (drop (call $input (i32.const 0) (i32.const 4)))
    (drop (call $output (i32.const 0) (i32.const 4)))
    (local.set $sel (i32.load (i32.const 0)))
    (if (i32.eq (local.get $sel) (i32.const 1)) (then unreachable))
    (if (i32.eq (local.get $sel) (i32.const 2))
      (then (loop $l
              (i32.store (i32.const 8) (i32.add (i32.load (i32.const 8)) (i32.const 1)))
              (br $l))))
    (if (i32.eq (local.get $sel) (i32.const 3)) (then (call $exit (i32.const 5))))
    (if (i32.eq (local.get $sel) (i32.const 4)) (then (call $exit (i32.const 0)))))
  (func (export "handle") (result i32)
    (drop (call $output (i32.const 0) (i32.const 4)))
    (i32.const 0)))
