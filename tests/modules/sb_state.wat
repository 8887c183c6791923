;; sb_state - template restore: init runs once, each call starts from the
;; template (tests/unit/runtime/test_sandbox.c).  Funcrefs that close over
;; the instance (table entries, a funcref global) must follow each copy.
;; handle outputs six u32: g via table[0], g via table[1] (set from the
;; funcref global), mem[100], init count (mem[104]), memory.size, mem[70000];
;; then changes all of them and grows the memory by a page.
;; From the template: 16 16 43 1 2 0.  A second call on the same
;; (warm) instance: 17 17 44 1 3 9.
(module
  (import "cloister" "output" (func $output (param i32 i32) (result i32)))
  (type $v_i (func (result i32)))
  (memory (export "memory") 1 16)
  (global $g (mut i32) (i32.const 5))
  (global $fr (mut funcref) (ref.null func))
  (table $t 2 funcref)
  (elem (i32.const 0) $get_g)
  (func $get_g (result i32) (global.get $g))
  (func (export "init")
    (global.set $g (i32.add (global.get $g) (i32.const 10)))
    (i32.store (i32.const 100) (i32.const 42))
    (i32.store (i32.const 104) (i32.add (i32.load (i32.const 104)) (i32.const 1)))
    (global.set $fr (ref.func $get_g))
    (drop (memory.grow (i32.const 1))))
  (func (export "handle") (result i32)
    (global.set $g (i32.add (global.get $g) (i32.const 1)))
    (i32.store (i32.const 100) (i32.add (i32.load (i32.const 100)) (i32.const 1)))
    (table.set $t (i32.const 1) (global.get $fr))
    (i32.store (i32.const 200) (call_indirect (type $v_i) (i32.const 0)))
    (i32.store (i32.const 204) (call_indirect (type $v_i) (i32.const 1)))
    (i32.store (i32.const 208) (i32.load (i32.const 100)))
    (i32.store (i32.const 212) (i32.load (i32.const 104)))
    (i32.store (i32.const 216) (memory.size))
    (i32.store (i32.const 220) (i32.load (i32.const 70000)))
    (i32.store (i32.const 70000) (i32.const 9))
    (drop (memory.grow (i32.const 1)))
    (drop (call $output (i32.const 200) (i32.const 24)))
    (i32.const 0)))
