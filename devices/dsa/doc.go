// Package dsa is a software Intel Data Streaming Accelerator: DSA 1.0 as on
// Sapphire Rapids (PCI 8086:0b25, class 0x088000), faithful enough that the
// unmodified Linux idxd driver (6.1 and 6.12), accel-config's configuration
// sequence and dmatest use it as they use the hardware. The references are the
// Intel DSA Architecture Specification (order no. 341204, cited as SPEC) and
// the Linux idxd driver (drivers/dma/idxd, include/uapi/linux/idxd.h).
//
// # Files
//
//	config.go  Config (the shape), ParseConfig for --dsa
//	regs.go    the BAR0 register map, command/status/opcode/flag numbers
//	device.go  Device: BAR0 registers, the command state machine, SWERROR, INTCAUSE
//	portal.go  BAR2 work-submission portals (bus.Device + bus.Wide64)
//	engine.go  work queues, groups, engines (goroutines on lock-free rings; spin, park)
//	exec.go    descriptor validation, operations, completion records, interrupts
//	crc.go, dif.go  CRC-32C and T10 DIF
//	pci.go     Function/NewFunction/AddPCI: config space, PCIe and MSI-X capabilities
//	runner.go  Runner/RunDescriptors/Execute: the engines without a guest (benchmarks);
//	           Runner.Pull lets the engines feed themselves
//	mem.go     guest-memory access for the engines (one bounds check per operand)
//	desc.go    Descriptor/CompletionRecord encoders
//
// # Integration
//
// The model knows nothing of KVM. BAR0() and Portals() are bus.Devices (the
// portals also bus.Wide64) that the PCI layer maps at the BAR addresses, or a
// vfio-user server serves as regions; interrupts leave through an
// Interrupter (pci.MSIX in practice). Guest memory is reached only through
// *guestmem.Memory; an address outside it is a page fault in the
// completion record (or SWERROR), never a VMM error. SetMemory switches
// that memory under running engines (a vfio-user client's DMA mappings
// changed): each descriptor runs against one view, and the old view is
// not touched once SetMemory returns.
//
// # Behaviour and the choices made where the reference leaves room
//
//   - Capabilities (SPEC ch. 9): GENCAP max transfer shift 31, max batch shift 10,
//     overlapping copy, cache control, destination readback, CMDCAP (commands
//     1-12; 13/14 with Config.IntHandles), config support; no block-on-fault,
//     no event log, perfmon offset 0, IMS size 0. WQCAP: shared+dedicated,
//     priority, occupancy; 2.0 adds 64-byte WQCFG with OPCFG. OPCAP
//     0x1003f03ff. BAR0 64 KiB: MSIXPERM 0x400, GRPCFG 0x600, WQCFG 0x800,
//     MSI-X table 0x4000, PBA 0x5000. MSI-X vectors = WQs+1.
//   - Commands run synchronously inside the CMD write, so CMDSTS.Active is
//     never observable (the driver spins on it without a timeout at probe),
//     and "command while active" (SWERROR 0x52) cannot happen. The
//     completion interrupt (INTCAUSE bit 1, vector 0) is raised only with
//     CMD[31].
//   - Locked configuration writes are ignored, not faulted: GENCFG and
//     GRPCFG and WQ sizes while the device is not Disabled, the other WQ
//     fields while the WQ is enabled; read-only dwords (WQCFG dword 6) ignore
//     the write-back the driver does. Reset Device restores every register
//     (SPEC Table 9-3). Reset WQ clears the WQ's fields (the driver ORs the
//     hardware value into its shadow, so stale bits must go) but keeps the WQ
//     size while the device is enabled: the size is a device-level partition
//     that cannot be rewritten then, and the driver's disable-wq/enable-wq
//     cycle on an enabled device depends on it.
//   - Enable Device/WQ perform the SPEC 5.1/5.2 checks with their CMDSTS
//     codes (0x10-0x17, 0x20-0x28). PASID enable needs SetPASIDEnabled (the
//     PCIe PASID capability); without it shared WQs cannot be enabled, as on
//     a guest without a vIOMMU. Clearing bus mastering while enabled halts
//     the device (SWERROR 0x51, INTCAUSE halt); Reset Device recovers.
//   - Portals: a dedicated WQ takes 64-byte posted writes (MOVDIR64B) and
//     answers Retry to ENQCMD/S; a shared WQ takes ENQCMD/S only, with Retry
//     at the threshold (limited portals) or the size (unlimited). A posted
//     write to a full dedicated WQ is dropped with SWERROR 0x53; a disabled
//     WQ ignores posted writes. Plain 64-byte writes are posted writes
//     (MOVDIR64B); smaller writes are ignored; reads return 0. IMS portals
//     work but there is no IMS table, so their completion interrupts are
//     invalid handles (0x19).
//   - Engines: each group with engines gets one FIFO queue (capacity = its
//     WQs' sizes, so a submission never blocks a vCPU) and one goroutine per
//     engine; descriptors of a group complete out of order, as with
//     DMA_COMPLETION_NO_ORDER. Drain WQ/All/PASID wait for completion; Abort
//     discards queued descriptors without completion records. A Drain
//     descriptor waits for the descriptors taken before it. Batch members
//     run in order on the batch's engine (which satisfies any fence), with
//     no queue, lock or wake-up per member. Groups share nothing, so the
//     engines of independent WQs in different groups scale across cores.
//   - Occupancy counts descriptors accepted and not yet completed (it drops
//     after the completion record is written).
//
// # The hot path (see engine.go for the details)
//
// A submission (the portal write, under the WQ's mutex) copies the 64 bytes
// once, into a slot of the group's ring, and does two atomic operations
// (claim the slot, publish it) plus one add on a counter only submitters
// write. An engine takes the slot with one load (a single-engine group runs
// the descriptor in place) or one CAS and a 128-byte copy (several engines),
// checks each operand's range once against the guest-memory regions, moves
// the data with one copy() straight between the guest-memory slices, stores
// bytes 4-31 of the completion record and then its first word (status
// included) with one atomic store, and adds one to a counter only engines
// write. No lock, no allocation, no channel, no wake-up of anybody unless
// someone waits (a command, the Runner) or an engine is parked.
//
// Idle: an engine that has just worked spins for Config.Spin (default 50
// µs; --dsa spin=...), yielding its P, then parks in the futex system call;
// a submitter wakes it only if it parked. The window adapts: a spin that
// runs out halves it (to none), a burst of quick wake-ups restores a short
// one; an engine that polls a vfio-user mapped portal while it spins
// (SetIdlePoll) keeps it whole. A parked device costs no CPU.
//   - Completion records: written when RCR is set or the status is not
//     success, bytes 1-31 first and the status byte last with release
//     ordering; then the interrupt named by the completion interrupt handle
//     (unless masked: pci.MSIX sets the PBA bit; or MSIXPERM Ignore). With
//     CRAV=0 an error goes to SWERROR; a misaligned record (0x1b) or one
//     outside memory (0x1a) too. Page faults report the first address outside
//     guest memory, the bytes completed and (status bit 7) a write. SWERROR
//     for Invalid Flags (0x11) carries the flags bitmask (qword 1 63:32,
//     Error Info Valid).
//   - Required flags: Compare, Compare Pattern, Create Delta, CRC Generation
//     and Copy with CRC must set RCR (their result is only in the record), a
//     Drain must set RCR or RCI; otherwise Invalid Flags (0x11) naming the
//     missing flag(s).
//   - Guest memory that vanishes under the engine (a vfio-user client that
//     truncates the file behind a DMA mapping) is a SIGBUS; descriptors run
//     with debug.SetPanicOnFault, so it completes as a page fault at the
//     faulting page (0 bytes completed) instead of killing the process.
//   - Batch: 2..WQ max count (0x14), 64-byte aligned list (0x18), list
//     outside memory 0x06. A member that fails makes the batch 0x05; a
//     fenced member after a failed or false-predicate member abandons the
//     rest (false predicate alone does not fail the batch). Nested Batch and
//     Drain are unsupported opcodes inside a batch.
//   - CRC-32C: see crc.go (default = hash/crc32 Castagnoli with the seed as
//     running value). DIF: see dif.go (CRC-16 T10-DIF guard, big-endian PI).
package dsa
