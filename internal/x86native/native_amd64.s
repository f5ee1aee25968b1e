//go:build linux && amd64

#include "textflag.h"

// func call(fn uintptr)
// The generated code saves and restores every register Go needs and uses a
// few bytes of stack below SP (the return address, two pushes), which the
// stack guard's slack covers.
TEXT ·call(SB), $32-8
	MOVQ fn+0(FP), AX
	CALL AX
	RET
