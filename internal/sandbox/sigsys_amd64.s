#include "go_asm.h"
#include "textflag.h"

// Offsets in the kernel's siginfo_t (SIGSYS) and ucontext_t on x86-64.
#define SI_ERRNO	4	// the filter's SECCOMP_RET_DATA: which filter refused
#define SI_SYSCALL	24
#define SI_ARCH		28
#define UC_RDI		104	// uc_mcontext.gregs[REG_RDI]
#define UC_RSI		112
#define UC_RDX		136
#define AUDIT_ARCH_X86_64	0xc000003e

// PART(off) appends sigsysPart[off/16] to the message at DI.
#define PART(off) MOVQ ·sigsysPart+(off)(SB), SI; MOVQ ·sigsysPart+(off+8)(SB), CX; CALL copyStr<>(SB)

// sigsysHandler is SIGSYS's handler. The kernel enters it with the C calling
// convention (DI signal, SI *siginfo_t, DX *ucontext_t) on the thread's
// signal stack, with every signal blocked. It uses nothing of Go's runtime:
// it formats one line into sigsysBuf from tables the Go side filled before
// the filters went in, writes it to stderr and ends the process with
// exit_group(159). A second thread that traps meanwhile waits for the end.
TEXT sigsysHandler<>(SB),NOSPLIT|NOFRAME,$0
	MOVL	$1, AX
	XCHGL	AX, ·sigsysBusy(SB)
	TESTL	AX, AX
	JNE	wait
	MOVQ	SI, R12
	MOVQ	DX, R13
	LEAQ	·sigsysBuf(SB), DI

	PART(0)
	// The filter that refused, from SECCOMP_RET_DATA.
	MOVL	SI_ERRNO(R12), AX
	ANDL	$(const_sigsysKinds-1), AX
	SHLQ	$4, AX
	LEAQ	·sigsysKind(SB), BX
	MOVQ	0(BX)(AX*1), SI
	MOVQ	8(BX)(AX*1), CX
	CALL	copyStr<>(SB)
	PART(16)
	// The system call's name and number (x86-64 calls only; anything else
	// takes the last slot, "unknown").
	MOVL	SI_SYSCALL(R12), AX
	MOVL	SI_ARCH(R12), BX
	CMPL	BX, $AUDIT_ARCH_X86_64
	JNE	unknown
	CMPQ	AX, $const_sigsysMaxNr
	JCS	named
unknown:
	MOVQ	$const_sigsysMaxNr, AX
named:
	SHLQ	$4, AX
	LEAQ	·sigsysName(SB), BX
	MOVQ	0(BX)(AX*1), SI
	MOVQ	8(BX)(AX*1), CX
	CALL	copyStr<>(SB)
	// Its first three arguments.
	PART(32)
	MOVQ	UC_RDI(R13), AX
	CALL	hex<>(SB)
	PART(48)
	MOVQ	UC_RSI(R13), AX
	CALL	hex<>(SB)
	PART(48)
	MOVQ	UC_RDX(R13), AX
	CALL	hex<>(SB)
	PART(64)
	MOVL	$186, AX	// gettid
	SYSCALL
	CALL	dec<>(SB)
	PART(80)

	LEAQ	·sigsysBuf(SB), SI
	MOVQ	DI, DX
	SUBQ	SI, DX
	MOVL	$2, DI
	MOVL	$1, AX		// write(2, buf, len)
	SYSCALL
	MOVL	$const_ExitStatus, DI
	MOVL	$231, AX	// exit_group
	SYSCALL
	HLT
wait:
	MOVL	$24, AX		// sched_yield, until exit_group ends this thread too
	SYSCALL
	JMP	wait

// sigsysRestorer is the sa_restorer x86-64 requires (never reached: the
// handler does not return).
TEXT sigsysRestorer<>(SB),NOSPLIT|NOFRAME,$0
	MOVL	$15, AX		// rt_sigreturn
	SYSCALL
	HLT

// copyStr copies CX bytes from SI to DI, advancing DI.
TEXT copyStr<>(SB),NOSPLIT|NOFRAME,$0
	REP; MOVSB
	RET

// hex writes AX at DI as 0x and lower-case hex digits without leading
// zeros, advancing DI. Clobbers BX, CX, DX.
TEXT hex<>(SB),NOSPLIT|NOFRAME,$0
	MOVB	$'0', 0(DI)
	MOVB	$'x', 1(DI)
	ADDQ	$2, DI
	MOVQ	$60, CX
	XORL	DX, DX		// non-zero once a digit has been written
hexloop:
	MOVQ	AX, BX
	SHRQ	CX, BX
	ANDQ	$15, BX
	ORQ	BX, DX
	CMPQ	CX, $0
	JEQ	hexput		// the last digit is always written
	TESTQ	DX, DX
	JEQ	hexnext		// a leading zero
hexput:
	CMPQ	BX, $10
	JCS	hexdigit
	ADDQ	$('a'-'0'-10), BX
hexdigit:
	ADDQ	$'0', BX
	MOVB	BX, 0(DI)
	INCQ	DI
	CMPQ	CX, $0
	JEQ	hexdone
hexnext:
	SUBQ	$4, CX
	JMP	hexloop
hexdone:
	RET

// dec writes AX at DI in decimal, advancing DI. Clobbers AX, BX, CX, DX,
// R8, R9.
TEXT dec<>(SB),NOSPLIT|NOFRAME,$0
	MOVQ	AX, R9
	MOVQ	AX, R8
	MOVQ	$1, CX
	MOVQ	$10, BX
deccount:
	CMPQ	R8, $10
	JCS	decwrite
	MOVQ	R8, AX
	XORL	DX, DX
	DIVQ	BX
	MOVQ	AX, R8
	INCQ	CX
	JMP	deccount
decwrite:
	ADDQ	CX, DI
	MOVQ	DI, R8
	MOVQ	R9, AX
decloop:
	XORL	DX, DX
	DIVQ	BX
	ADDQ	$'0', DX
	DECQ	R8
	MOVB	DX, 0(R8)
	TESTQ	AX, AX
	JNE	decloop
	RET

// func sigsysHandlerAddr() uintptr
TEXT ·sigsysHandlerAddr(SB),NOSPLIT,$0-8
	LEAQ	sigsysHandler<>(SB), AX
	MOVQ	AX, ret+0(FP)
	RET

// func sigsysRestorerAddr() uintptr
TEXT ·sigsysRestorerAddr(SB),NOSPLIT,$0-8
	LEAQ	sigsysRestorer<>(SB), AX
	MOVQ	AX, ret+0(FP)
	RET
