//go:build linux && amd64

// Package x86native runs a few bytes of x86-64 machine code on the host CPU
// with chosen registers, flags and x87/SSE state, and returns what the CPU
// left: the reference godvm's instruction-emulator tests compare against
// (vmm/emulate, vmm/probe). It exists for tests only.
//
// Run copies the code into a fresh executable page between a generated
// prologue, which saves the Go registers and the host's FPU state and loads
// the input (FXRSTOR64 of State.FX, POPFQ, every general register but RSP),
// and an epilogue, which stores the result (every general register, PUSHFQ,
// FXSAVE64) and restores the host's. The code runs in user mode on the
// goroutine's stack: it must not move RSP for good or loop. Memory operands
// point wherever the caller's registers say (Go memory the caller keeps
// alive). The epilogue also stores the x87 environment with FNSTENV: this
// CPU (AMD) stores FOP, FIP and FDP in an FXSAVE image only while an x87
// exception is pending, and FNSTENV shows them always.
//
// An #MF or #XM the code raises comes back as State.Fault ("#MF", "#XM")
// with the x87/SSE state at the fault (the FXSAVE part of the signal
// frame; the general registers are lost): while the code runs, SIGFPE
// goes to a handler of Run's own (rt_sigaction, on the thread's alternate
// signal stack, the code's thread locked), which records the frame and
// resumes at a landing that restores the caller's state, so Go never sees
// the signal. (Go's own handler would turn it into a panic and then run
// the runtime with the guest's unmasked MXCSR: the next float operation
// in the garbage collector traps again.) Any other exception (#GP, #PF,
// #UD) kills the test process.
package x86native

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// State is the machine state before or after the code.
type State struct {
	// GPR are the general registers by encoding number (RAX, RCX, RDX,
	// RBX, RSP, RBP, RSI, RDI, R8-R15). RSP is not loaded (the code runs on
	// the goroutine's stack); after the run it holds the stack pointer the
	// code left, for callers that check it did not move.
	GPR [16]uint64
	// RFLAGS: only the arithmetic flags (CF, PF, AF, ZF, SF, OF) are
	// loaded; the others stay as user mode needs them (IF set, DF, TF and
	// AC clear).
	RFLAGS uint64
	// FX is the 64-bit FXSAVE image: loaded with FXRSTOR64 before the code,
	// stored with FXSAVE64 after it. MXCSR must be valid on this CPU
	// (within MXCSR_MASK): FXRSTOR64 raises #GP otherwise.
	FX [512]byte
	// Env is the 28-byte x87 environment FNSTENV stored after the code
	// (32-bit protected-mode format: FIP and FDP are their low 32 bits).
	Env [28]byte
	// Fault is "#MF" or "#XM" when the code raised one (then FX is the
	// state at the fault and GPR, RFLAGS and Env are not set), else "".
	Fault string
	// Code is the address the caller's code ran at, for comparing FIP.
	Code uint64
}

// ArithFlags are the RFLAGS bits Run loads: OF, SF, ZF, AF, PF, CF.
const ArithFlags = 0x8d5

// Offsets in the data page the generated code uses.
const (
	offIn      = 0    // 16 GPRs in
	offFlagsIn = 128  //
	offSave    = 136  // RSP, RBP, RBX, R12, R13, R14, R15 of the caller
	offOut     = 192  // 16 GPRs out
	offFlags   = 320  //
	offFXIn    = 384  // 512 bytes, 64-aligned
	offFXOut   = 896  //
	offFXHost  = 1408 //
	offEnv     = 1920 // 28 bytes
	offTrap    = 1952 // the handler's trap number + 1 (0: no fault)
	dataSize   = 1960 //
	pageSize   = 4096
	maxCode    = 1024 // bytes of code per run
	numRegs    = 16
	regRAX     = 0
	regRSP     = 4
)

var mu sync.Mutex // one run at a time: the pages are shared

var (
	pages []byte // code page, then data page
)

// call jumps to fn (native_amd64.s).
func call(fn uintptr)

// Run executes code with in's state and returns the state after it.
func Run(code []byte, in *State) (out *State, err error) {
	if len(code) > maxCode {
		return nil, fmt.Errorf("x86native: %d bytes of code, at most %d", len(code), maxCode)
	}
	mu.Lock()
	defer mu.Unlock()
	if pages == nil {
		p, err := unix.Mmap(-1, 0, 2*pageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			return nil, fmt.Errorf("x86native: mmap: %w", err)
		}
		pages = p
	}
	codePage, data := pages[:pageSize], pages[pageSize:]
	dataAddr := uint64(uintptr(unsafe.Pointer(&data[0])))
	clear(data[:dataSize])
	le := binary.LittleEndian
	for i, v := range in.GPR {
		le.PutUint64(data[offIn+8*i:], v)
	}
	le.PutUint64(data[offFlagsIn:], 0x202|in.RFLAGS&ArithFlags)
	copy(data[offFXIn:offFXIn+512], in.FX[:])
	stubs := faultStubs(dataAddr, uint64(uintptr(unsafe.Pointer(&codePage[0]))))
	prog := append(stubs.code, program(dataAddr, code)...)
	codeAt := uint64(uintptr(unsafe.Pointer(&codePage[0]))) + uint64(len(stubs.code))
	out = &State{Code: codeAt + uint64(len(prologue(dataAddr)))}
	if err := loadCode(codePage, prog); err != nil {
		return nil, err
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var old sigaction
	act := sigaction{handler: stubs.handler, flags: saSiginfo | saOnstack | saRestorer, restorer: stubs.restorer}
	if err := rtSigaction(unix.SIGFPE, &act, &old); err != nil {
		return nil, err
	}
	call(uintptr(codeAt))
	if err := rtSigaction(unix.SIGFPE, &old, nil); err != nil {
		panic(err) // Go's SIGFPE handler could not be put back
	}
	if trap := le.Uint64(data[offTrap:]); trap != 0 {
		copy(out.FX[:], data[offFXOut:offFXOut+512])
		switch trap - 1 {
		case 16:
			out.Fault = "#MF"
		case 19:
			out.Fault = "#XM"
		default:
			out.Fault = fmt.Sprintf("vector %d", trap-1)
		}
		return out, nil
	}
	for i := range out.GPR {
		out.GPR[i] = le.Uint64(data[offOut+8*i:])
	}
	out.RFLAGS = le.Uint64(data[offFlags:])
	copy(out.FX[:], data[offFXOut:offFXOut+512])
	copy(out.Env[:], data[offEnv:offEnv+28])
	return out, nil
}

// loadCode puts a program into the code page.
func loadCode(codePage, prog []byte) error {
	if len(prog) > len(codePage) {
		return fmt.Errorf("x86native: %d bytes of code", len(prog))
	}
	if err := unix.Mprotect(codePage, unix.PROT_READ|unix.PROT_WRITE); err != nil {
		return fmt.Errorf("x86native: mprotect: %w", err)
	}
	clear(codePage)
	copy(codePage, prog)
	if err := unix.Mprotect(codePage, unix.PROT_READ|unix.PROT_EXEC); err != nil {
		return fmt.Errorf("x86native: mprotect: %w", err)
	}
	return nil
}

// sigaction is the kernel's struct sigaction (x86-64).
type sigaction struct {
	handler  uint64
	flags    uint64
	restorer uint64
	mask     uint64
}

const (
	saSiginfo  = 0x4
	saOnstack  = 0x0800_0000
	saRestorer = 0x0400_0000
)

func rtSigaction(sig unix.Signal, act, old *sigaction) error {
	_, _, errno := unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(sig), uintptr(unsafe.Pointer(act)),
		uintptr(unsafe.Pointer(old)), 8, 0, 0)
	if errno != 0 {
		return fmt.Errorf("x86native: rt_sigaction(SIGFPE): %w", errno)
	}
	return nil
}

// stubs are the SIGFPE handler, its restorer and the landing it resumes
// at, placed at the start of the code page.
type stubs struct {
	code                       []byte
	handler, restorer, landing uint64
}

// Offsets in the x86-64 ucontext the handler gets in RDX.
const (
	ucRIP    = 40 + 16*8 // uc_mcontext.gregs[REG_RIP]
	ucTrapNo = 40 + 20*8 // gregs[REG_TRAPNO]
	ucFPRegs = 40 + 23*8 // uc_mcontext.fpregs: the FXSAVE-format area
)

func faultStubs(data, page uint64) stubs {
	a := &asm{data: data}
	var s stubs
	// Two passes: the handler embeds the landing's address.
	for pass := 0; pass < 2; pass++ {
		a.p = nil
		s.handler = page
		a.p = append(a.p, 0x48, 0x8b, 0xb2) // mov rsi, [rdx+fpregs]
		a.p = le.AppendUint32(a.p, ucFPRegs)
		a.p = append(a.p, 0x48, 0xbf) // movabs rdi, data+out
		a.p = le.AppendUint64(a.p, data+offFXOut)
		a.p = append(a.p, 0xb9, 0x00, 0x02, 0x00, 0x00) // mov ecx, 512
		a.p = append(a.p, 0xfc, 0xf3, 0xa4)             // cld; rep movsb
		a.p = append(a.p, 0x48, 0x8b, 0x82)             // mov rax, [rdx+trapno]
		a.p = le.AppendUint32(a.p, ucTrapNo)
		a.p = append(a.p, 0x48, 0xff, 0xc0) // inc rax
		a.p = append(a.p, 0x48, 0xb9)       // movabs rcx, data+trap
		a.p = le.AppendUint64(a.p, data+offTrap)
		a.p = append(a.p, 0x48, 0x89, 0x01) // mov [rcx], rax
		a.p = append(a.p, 0x48, 0xb8)       // movabs rax, landing
		a.p = le.AppendUint64(a.p, s.landing)
		a.p = append(a.p, 0x48, 0x89, 0x82) // mov [rdx+rip], rax
		a.p = le.AppendUint32(a.p, ucRIP)
		a.p = append(a.p, 0xc3) // ret (to the restorer)
		s.restorer = page + uint64(len(a.p))
		a.p = append(a.p, 0xb8, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05) // mov eax, 15 (rt_sigreturn); syscall
		s.landing = page + uint64(len(a.p))
		a.movabsRAX()
		a.mem(0x48, []byte{0x0f, 0xae}, 1, offFXHost) // fxrstor64 [rax+host]
		for i, r := range calleeRegs {
			a.mem(0x48, []byte{0x8b}, r, offSave+8*i) // mov r, [rax+save]
		}
		a.p = append(a.p, 0xfc, 0xc3) // cld; ret (to call's caller)
	}
	s.code = a.p
	return s
}

var le = binary.LittleEndian

// asm builds the prologue and epilogue. Every memory access is
// [rax+disp32] with RAX = the data page.
type asm struct {
	p    []byte
	data uint64
}

func (a *asm) movabsRAX() {
	a.p = append(a.p, 0x48, 0xb8)
	a.p = binary.LittleEndian.AppendUint64(a.p, a.data)
}

// mem emits op with ModRM [rax+disp32] and reg field r; rex carries REX.W
// (REX.R is added for r >= 8).
func (a *asm) mem(rex byte, op []byte, r int, disp int) {
	rex |= 0x40
	if r >= 8 {
		rex |= 0x04
	}
	if rex != 0x40 {
		a.p = append(a.p, rex)
	}
	a.p = append(a.p, op...)
	a.p = append(a.p, byte(0x80|(r&7)<<3))
	a.p = binary.LittleEndian.AppendUint32(a.p, uint32(int32(disp)))
}

var calleeRegs = []int{4, 5, 3, 12, 13, 14, 15} // RSP, RBP, RBX, R12-R15

// prologue saves the caller's registers and FPU state and loads the input.
func prologue(data uint64) []byte {
	a := &asm{data: data}
	a.movabsRAX()
	for i, r := range calleeRegs {
		a.mem(0x48, []byte{0x89}, r, offSave+8*i) // mov [rax+save], r
	}
	a.mem(0x48, []byte{0x0f, 0xae}, 0, offFXHost) // fxsave64 [rax+host]
	a.mem(0x48, []byte{0x0f, 0xae}, 1, offFXIn)   // fxrstor64 [rax+in]
	a.mem(0, []byte{0xff}, 6, offFlagsIn)         // push qword [rax+flags]
	a.p = append(a.p, 0x9d)                       // popfq
	for r := 1; r < numRegs; r++ {
		if r != regRSP {
			a.mem(0x48, []byte{0x8b}, r, offIn+8*r) // mov r, [rax+in]
		}
	}
	a.mem(0x48, []byte{0x8b}, regRAX, offIn) // mov rax, [rax]
	return a.p
}

// epilogue stores the state the code left and restores the caller's.
func epilogue(data uint64) []byte {
	a := &asm{data: data}
	a.p = append(a.p, 0x50, 0x9c) // push rax; pushfq
	a.movabsRAX()
	a.mem(0, []byte{0x8f}, 0, offFlags) // pop qword [rax+flags]
	a.mem(0, []byte{0x8f}, 0, offOut)   // pop qword [rax+out] (the code's RAX)
	for r := 1; r < numRegs; r++ {
		a.mem(0x48, []byte{0x89}, r, offOut+8*r) // mov [rax+out], r
	}
	a.mem(0x48, []byte{0x0f, 0xae}, 0, offFXOut)  // fxsave64 [rax+out]
	a.mem(0, []byte{0xd9}, 6, offEnv)             // fnstenv [rax+env] (after: it masks exceptions)
	a.mem(0x48, []byte{0x0f, 0xae}, 1, offFXHost) // fxrstor64 [rax+host]
	for i, r := range calleeRegs {
		a.mem(0x48, []byte{0x8b}, r, offSave+8*i) // mov r, [rax+save]
	}
	a.p = append(a.p, 0xfc, 0xc3) // cld; ret
	return a.p
}

// program is the prologue, the code and the epilogue.
func program(data uint64, code []byte) []byte {
	p := prologue(data)
	p = append(p, code...)
	return append(p, epilogue(data)...)
}
