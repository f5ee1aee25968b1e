package dsa

import (
	"fmt"
	"log/slog"
	"math/bits"
	"sync"
	"sync/atomic"

	"godvm/devices/bus"
	"godvm/guestmem"
)

// Device is one DSA.
type Device struct {
	cfg  Config
	mem  *guestmem.Memory
	intr Interrupter
	log  *slog.Logger

	// capability registers (constant)
	genCap, wqCap, grpCap, engCap, cmdCap uint64
	opCap                                 [4]uint64
	offsets                               [2]uint64
	wqcfgSize                             int

	mu       sync.Mutex // registers, configuration and commands
	state    uint32
	genCfg   uint32
	genCtrl  atomic.Uint32 // read by engines without d.mu
	cmdSts   uint32
	grp      []grpCfg
	wqs      []*workQueue
	msixPerm []atomic.Uint32 // read by engines (Ignore bit)
	bme      bool
	pasidEn  bool
	groups   []*group // running engines (device Enabled)

	irqMu    sync.Mutex // INTCAUSE, SWERROR
	intCause uint32
	swErr    [4]uint64

	msixTable, msixPBA bus.Device
	closers            []func()
	exec               executor                   // template; engines run cur (SetMemory)
	cur                atomic.Pointer[executor]   // what the engines run descriptors with
	idlePoll           atomic.Pointer[func() int] // SetIdlePoll
}

type grpCfg struct {
	wqs     [4]uint64
	engines uint64
	flags   uint64
}

// New makes a device in its reset state. intr delivers MSI-X vectors (may be
// nil in tests that do not care). mem is the guest memory descriptors address.
func New(mem *guestmem.Memory, cfg Config, intr Interrupter) (*Device, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := &Device{cfg: cfg, mem: mem, intr: intr, log: slog.Default().With("dev", "dsa")}
	d.wqcfgSize = 32
	if cfg.Version >= 0x200 {
		d.wqcfgSize = 64
	}
	const (
		maxXferShift  = 31
		maxBatchShift = 10
	)
	d.genCap = 1<<1 | // overlapping copy
		1<<2 | // cache control (memory)
		1<<4 | // CMDCAP present
		1<<8 | // destination readback
		maxXferShift<<16 | maxBatchShift<<21 |
		1<<31 // configuration support
	d.cmdCap = 0x1ffe // commands 1..12
	if cfg.IntHandles {
		d.cmdCap |= 1<<CmdRequestIntHandle | 1<<CmdReleaseIntHandle
	}
	d.wqCap = uint64(cfg.WQSize) | uint64(cfg.WQs)<<16 |
		1<<48 | 1<<49 | // shared and dedicated modes
		1<<51 | 1<<52 // priority, occupancy
	if cfg.Version >= 0x200 {
		d.wqCap |= 1<<24 | 1<<54 // 64-byte WQCFG with per-WQ OPCFG
	}
	d.grpCap = uint64(cfg.Groups) | totalReadBufs<<8
	d.engCap = uint64(cfg.Engines) | 32<<8 | 8<<16
	d.opCap[0] = OpCapDSA1
	d.offsets[0] = GRPCFGOffset/0x100 | (WQCFGOffset/0x100)<<16 | (MSIXPermOffset/0x100)<<32
	d.grp = make([]grpCfg, cfg.Groups)
	d.wqs = make([]*workQueue, cfg.WQs)
	for i := range d.wqs {
		d.wqs[i] = newWorkQueue(i)
	}
	d.msixPerm = make([]atomic.Uint32, cfg.Vectors())
	d.exec = executor{
		intr: intr, vectors: cfg.Vectors(), version: cfg.Version,
		swerr: d.reportSWErr, drain: d.drainBefore, opcap: d.opCap[0], readbackCap: true,
		ignored: func(v int) bool { return d.msixPerm[v].Load()&msixPermIgnore != 0 },
	}
	d.exec.setMem(mem)
	d.publishExec()
	d.resetLocked()
	return d, nil
}

// publishExec hands the engines a copy of d.exec; each descriptor loads it
// once (runWork), so one descriptor runs against one memory view.
func (d *Device) publishExec() {
	x := d.exec
	d.cur.Store(&x)
}

// SetMemory replaces the guest memory the device's descriptors address (a
// vfio-user client's DMA mappings changed). The device state is kept. When
// SetMemory returns no engine touches the old memory: descriptors taken
// after the switch use mem, and the ones already running are waited for
// (every WQ drained, as Drain All does). Submissions may go on meanwhile.
// mem nil is an empty memory: every descriptor then completes with a page
// fault (or SWERROR when its completion record is unreachable).
func (d *Device) SetMemory(mem *guestmem.Memory) {
	if mem == nil {
		mem, _ = guestmem.FromBytes()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.mem = mem
	d.exec.setMem(mem)
	d.publishExec()
	for _, w := range d.wqs {
		w.drain()
	}
}

const (
	totalReadBufs  = 64
	msixPermIgnore = 1 << 2 // MSIXPERM: interrupts through this entry are not generated
)

// Config returns the device's shape.
func (d *Device) Config() Config { return d.cfg }

// SetMSIX places the MSI-X table and PBA models at MSIXTableOffset and
// MSIXPBAOffset of BAR0 (offsets passed to them are relative to those).
func (d *Device) SetMSIX(table, pba bus.Device) {
	d.mu.Lock()
	d.msixTable, d.msixPBA = table, pba
	d.mu.Unlock()
}

// SetInterrupter replaces the interrupt sink (for glue created after New).
func (d *Device) SetInterrupter(intr Interrupter) {
	d.mu.Lock()
	d.intr = intr
	d.exec.intr = intr
	d.publishExec()
	d.mu.Unlock()
}

// SetBusMaster tells the device about PCI COMMAND.BME. Clearing it while the
// device is enabled halts the device (SWERROR 0x51), as the spec says for
// PCI configuration changes while not Disabled.
func (d *Device) SetBusMaster(on bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.bme && !on && d.state == StateEnabled {
		d.stopAllLocked(true)
		d.state = StateHalt
		d.reportSWErr(SWError{Code: swerrPCIConfigChanged, WQ: -1})
		d.raise(IntHalt, GenCtrlHaltIntEn)
	}
	d.bme = on
}

// SetPASIDEnabled tells the device whether the PCIe PASID capability is
// enabled (a shared WQ or WQ PASID needs it).
func (d *Device) SetPASIDEnabled(on bool) {
	d.mu.Lock()
	d.pasidEn = on
	d.mu.Unlock()
}

// Reset is a function-level reset: engines stopped, every register back to
// its reset value.
func (d *Device) Reset() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stopAllLocked(true)
	d.resetLocked()
}

// Close stops the engines and releases what the PCI glue attached (the
// MSI-X vectors of a Function). Safe to call more than once.
func (d *Device) Close() {
	d.mu.Lock()
	d.stopAllLocked(true)
	d.state = StateDisabled
	closers := d.closers
	d.closers = nil
	d.mu.Unlock()
	for _, f := range closers {
		f()
	}
}

// resetLocked puts every register to its reset value (SPEC Table 9-3).
func (d *Device) resetLocked() {
	d.state = StateDisabled
	d.genCfg = totalReadBufs
	d.genCtrl.Store(0)
	d.cmdSts = 0
	for i := range d.grp {
		d.grp[i] = grpCfg{flags: totalReadBufs << 20}
	}
	for _, w := range d.wqs {
		w.mu.Lock()
		w.resetCfg(true, d.opCap)
		w.mu.Unlock()
	}
	for i := range d.msixPerm {
		d.msixPerm[i].Store(0)
	}
	d.irqMu.Lock()
	d.intCause = 0
	d.swErr = [4]uint64{}
	d.irqMu.Unlock()
}

// raise sets INTCAUSE bits and signals vector 0 when enable (a GENCTRL bit,
// or 0 for always) allows it.
func (d *Device) raise(cause uint32, enable uint32) {
	d.irqMu.Lock()
	d.intCause |= cause
	d.irqMu.Unlock()
	if (enable == 0 || d.genCtrl.Load()&enable != 0) && d.intr != nil {
		d.intr.Notify(0)
	}
}

// reportSWErr records a software error in SWERROR (or its Overflow bit) and
// interrupts through vector 0 if GENCTRL enables it. Called by engines
// without d.mu.
func (d *Device) reportSWErr(e SWError) {
	d.irqMu.Lock()
	if d.swErr[0]&1 != 0 {
		d.swErr[0] |= 2 // overflow
	} else {
		q0 := uint64(1) | uint64(e.Code)<<8 | uint64(e.Opcode)<<32 | uint64(e.PASID&0xfffff)<<40
		if e.Desc {
			q0 |= 1 << 2
		}
		if e.WQ >= 0 {
			q0 |= 1<<3 | uint64(e.WQ&0xff)<<16
		}
		if e.Batch {
			q0 |= 1 << 4
		}
		if e.FaultWrite {
			q0 |= 1 << 5
		}
		if e.Priv {
			q0 |= 1 << 6
		}
		q1 := uint64(e.BatchIndex)
		if e.Code == StatusInvalFlags {
			// Error Info Valid, and the invalid flags in qword 1 63:32
			// (SPEC 9.2.15; Linux sw_err_reg.invalid_flags).
			q0 |= 1 << 7
			q1 |= uint64(e.InvalidFlags) << 32
		}
		d.swErr = [4]uint64{q0, q1, e.FaultAddr, 0}
	}
	d.intCause |= IntSWErr
	enabled := d.genCtrl.Load()&GenCtrlSWErrIntEn != 0
	d.irqMu.Unlock()
	d.log.Debug("software error", "code", fmt.Sprintf("%#x", e.Code), "wq", e.WQ, "op", e.Opcode, "addr", fmt.Sprintf("%#x", e.FaultAddr))
	if enabled && d.intr != nil {
		d.intr.Notify(0)
	}
}

// BAR0 returns the register BAR's handler (BAR0Size bytes).
func (d *Device) BAR0() bus.Device { return bar0{d} }

type bar0 struct{ d *Device }

func validAccess(off uint64, n int, size uint64) bool {
	switch n {
	case 1, 2, 4, 8:
	default:
		return false
	}
	return off%uint64(n) == 0 && off+uint64(n) <= size
}

func (b bar0) Read(off uint64, data []byte) {
	d := b.d
	for i := range data {
		data[i] = 0
	}
	if !validAccess(off, len(data), BAR0Size) {
		return
	}
	if t, o, ok := d.msixRange(off); ok {
		t.Read(o, data)
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	bus.ReadDwords(off, data, d.readDword)
}

func (b bar0) Write(off uint64, data []byte) {
	d := b.d
	if !validAccess(off, len(data), BAR0Size) {
		return
	}
	if t, o, ok := d.msixRange(off); ok {
		t.Write(o, data)
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	bus.WriteDwords(off, data, d.writeDword)
}

func (d *Device) msixRange(off uint64) (bus.Device, uint64, bool) {
	d.mu.Lock()
	t, p := d.msixTable, d.msixPBA
	d.mu.Unlock()
	n := uint64(d.cfg.Vectors())
	if off >= MSIXTableOffset && off < MSIXTableOffset+16*n && t != nil {
		return t, off - MSIXTableOffset, true
	}
	if off >= MSIXPBAOffset && off < MSIXPBAOffset+8*((n+63)/64) && p != nil {
		return p, off - MSIXPBAOffset, true
	}
	return nil, 0, false
}

func lo(v uint64) uint32 { return uint32(v) }
func hi(v uint64) uint32 { return uint32(v >> 32) }

func half(v uint64, dw uint64) uint32 {
	if dw&4 != 0 {
		return hi(v)
	}
	return lo(v)
}

func merge(old, v, mask, writable uint32) uint32 {
	m := mask & writable
	return old&^m | v&m
}

func (d *Device) readDword(off uint64) uint32 {
	switch {
	case off == RegVersion:
		return d.cfg.Version
	case off&^7 == RegGenCap:
		return half(d.genCap, off)
	case off&^7 == RegWQCap:
		return half(d.wqCap, off)
	case off&^7 == RegGrpCap:
		return half(d.grpCap, off)
	case off&^7 == RegEngCap:
		return half(d.engCap, off)
	case off >= RegOpCap && off < regOpCapEnd:
		return half(d.opCap[(off-RegOpCap)/8], off)
	case off >= RegOffsets && off < regOffsetEnd:
		return half(d.offsets[(off-RegOffsets)/8], off)
	case off == RegGenCfg:
		return d.genCfg
	case off == RegGenCtrl:
		return d.genCtrl.Load()
	case off == RegGenSts:
		return d.state // reset type 0 (software Reset Device suffices)
	case off == RegIntCause:
		d.irqMu.Lock()
		defer d.irqMu.Unlock()
		return d.intCause
	case off == RegCmdSts:
		return d.cmdSts
	case off&^7 == RegCmdCap:
		return half(d.cmdCap, off)
	case off >= RegSWErr && off < regSWErrEnd:
		d.irqMu.Lock()
		defer d.irqMu.Unlock()
		return half(d.swErr[(off-RegSWErr)/8], off)
	case off >= MSIXPermOffset && off < MSIXPermOffset+8*uint64(len(d.msixPerm)):
		if (off-MSIXPermOffset)%8 == 0 {
			return d.msixPerm[(off-MSIXPermOffset)/8].Load()
		}
	case off >= GRPCFGOffset && off < GRPCFGOffset+GRPCFGSize*uint64(len(d.grp)):
		g := &d.grp[(off-GRPCFGOffset)/GRPCFGSize]
		o := (off - GRPCFGOffset) % GRPCFGSize
		switch {
		case o < 32:
			return half(g.wqs[o/8], o)
		case o < 40:
			return half(g.engines, o)
		case o < 48:
			return half(g.flags, o)
		}
	case off >= WQCFGOffset && off < WQCFGOffset+uint64(d.wqcfgSize*len(d.wqs)):
		w := d.wqs[(off-WQCFGOffset)/uint64(d.wqcfgSize)]
		return w.readDword(int((off - WQCFGOffset) % uint64(d.wqcfgSize) / 4))
	}
	return 0
}

const (
	genCfgWritable   = 0xff | 1<<12
	genCtrlWritable  = GenCtrlSWErrIntEn | GenCtrlHaltIntEn
	grpFlagsWritable = 0x0ff0ffbf // TC-A, TC-B, use global limit, rdbufs reserved/allowed
)

func (d *Device) writeDword(off uint64, v, mask uint32) {
	switch {
	case off == RegGenCfg:
		if d.state == StateDisabled {
			d.genCfg = merge(d.genCfg, v, mask, genCfgWritable)
		}
	case off == RegGenCtrl:
		d.genCtrl.Store(merge(d.genCtrl.Load(), v, mask, genCtrlWritable))
	case off == RegIntCause:
		d.irqMu.Lock()
		d.intCause &^= v & mask
		d.irqMu.Unlock()
	case off == RegCmd:
		d.command(v & mask)
	case off == RegSWErr:
		d.irqMu.Lock()
		d.swErr[0] &^= uint64(v & mask & 3)
		d.irqMu.Unlock()
	case off >= MSIXPermOffset && off < MSIXPermOffset+8*uint64(len(d.msixPerm)):
		if (off-MSIXPermOffset)%8 == 0 {
			i := (off - MSIXPermOffset) / 8
			d.msixPerm[i].Store(merge(d.msixPerm[i].Load(), v, mask, 0xfffff00c))
		}
	case off >= GRPCFGOffset && off < GRPCFGOffset+GRPCFGSize*uint64(len(d.grp)):
		if d.state != StateDisabled {
			return // locked while the device is not Disabled: ignored, not faulted
		}
		g := &d.grp[(off-GRPCFGOffset)/GRPCFGSize]
		o := (off - GRPCFGOffset) % GRPCFGSize
		set := func(q *uint64, writable uint32) {
			if o&4 != 0 {
				*q = uint64(merge(hi(*q), v, mask, writable))<<32 | uint64(lo(*q))
			} else {
				*q = uint64(hi(*q))<<32 | uint64(merge(lo(*q), v, mask, writable))
			}
		}
		switch {
		case o < 32:
			set(&g.wqs[o/8], ^uint32(0))
		case o < 40:
			set(&g.engines, ^uint32(0))
		case o < 44:
			set(&g.flags, grpFlagsWritable)
		}
	case off >= WQCFGOffset && off < WQCFGOffset+uint64(d.wqcfgSize*len(d.wqs)):
		w := d.wqs[(off-WQCFGOffset)/uint64(d.wqcfgSize)]
		w.writeDword(int((off-WQCFGOffset)%uint64(d.wqcfgSize)/4), v, mask, d.state == StateDisabled, d.cfg.Version >= 0x200, d.opCap)
	}
}

// command executes a CMD write synchronously: CMDSTS.Active is never
// observable, which the driver's probe-time spin without timeout needs.
func (d *Device) command(cmd uint32) {
	code := cmd >> cmdCodeShift & cmdCodeMask
	operand := cmd & cmdOperandMask
	var st uint32
	switch code {
	case CmdEnableDevice:
		st = d.enableDevice()
	case CmdDisableDevice:
		if d.state != StateEnabled {
			st = CmdStsDisDevNotEn
			break
		}
		d.stopAllLocked(false)
		d.state = StateDisabled
	case CmdDrainAll, CmdDrainPASID:
		// Draining everything is a superset of draining one PASID.
		for _, w := range d.wqs {
			w.drain()
		}
	case CmdAbortAll:
		for _, w := range d.wqs {
			w.abort()
		}
	case CmdAbortPASID:
		for _, w := range d.wqs {
			w.abortPASID(operand)
		}
	case CmdResetDevice:
		d.stopAllLocked(true)
		d.resetLocked()
	case CmdEnableWQ:
		st = d.enableWQ(operand)
	case CmdDisableWQ, CmdDrainWQ, CmdAbortWQ, CmdResetWQ:
		st = d.wqCommand(code, operand)
	case CmdRequestIntHandle:
		if !d.cfg.IntHandles {
			st = CmdStsInvalCmd
		} else if operand&intHandleIMS != 0 || int(operand&0xffff) >= d.cfg.Vectors() {
			st = CmdStsInvalIntIdx
		} else {
			st = (operand & 0xffff) << 8 // handle = MSI-X index
		}
	case CmdReleaseIntHandle:
		if !d.cfg.IntHandles {
			st = CmdStsInvalCmd
		} else if operand&intHandleIMS != 0 || int(operand&0xffff) >= d.cfg.Vectors() {
			st = CmdStsNoHandle
		}
	default:
		st = CmdStsInvalCmd
	}
	d.cmdSts = st
	d.log.Debug("command", "code", code, "operand", fmt.Sprintf("%#x", operand), "status", fmt.Sprintf("%#x", st))
	if cmd&cmdIntReq != 0 {
		d.raise(IntCmdDone, 0)
	}
}

func (d *Device) enableDevice() uint32 {
	if d.state != StateDisabled {
		return CmdStsDevEnabled
	}
	if !d.bme {
		return CmdStsBusMaster
	}
	total := 0
	for _, w := range d.wqs {
		total += int(w.size())
	}
	if total > d.cfg.WQSize {
		return CmdStsWQSizeRange
	}
	validWQ := [4]uint64{}
	for i := range d.cfg.WQs {
		validWQ[i/64] |= 1 << (i % 64)
	}
	validEng := uint64(1)<<d.cfg.Engines - 1
	var seenWQ [4]uint64
	var seenEng uint64
	for _, g := range d.grp {
		hasWQ := false
		for i := range g.wqs {
			if g.wqs[i]&^validWQ[i] != 0 || g.wqs[i]&seenWQ[i] != 0 {
				return CmdStsGrpConfig2
			}
			seenWQ[i] |= g.wqs[i]
			hasWQ = hasWQ || g.wqs[i] != 0
		}
		if g.engines&^validEng != 0 || g.engines&seenEng != 0 {
			return CmdStsGrpConfig3
		}
		seenEng |= g.engines
		if hasWQ != (g.engines != 0) {
			return CmdStsGrpConfig
		}
	}
	for i, w := range d.wqs {
		if seenWQ[i/64]>>(i%64)&1 != 0 && w.size() == 0 {
			return CmdStsGrpConfig2 // an inactive WQ in a group
		}
	}
	// Start one engine goroutine per engine of every group with WQs.
	d.groups = nil
	for gi, g := range d.grp {
		if g.engines == 0 {
			continue
		}
		capacity := 0
		for i, w := range d.wqs {
			if g.wqs[i/64]>>(i%64)&1 != 0 {
				capacity += int(w.size())
			}
		}
		grp := startGroup(gi, bits.OnesCount64(g.engines), capacity, d.cfg.spin(), &d.idlePoll, d.runWork)
		d.groups = append(d.groups, grp)
		for i, w := range d.wqs {
			if g.wqs[i/64]>>(i%64)&1 != 0 {
				w.mu.Lock()
				w.group = grp
				w.mu.Unlock()
			}
		}
	}
	d.state = StateEnabled
	return CmdStsOK
}

// stopAllLocked disables every WQ (aborting or draining its descriptors) and
// stops the engines.
func (d *Device) stopAllLocked(abort bool) {
	for _, w := range d.wqs {
		if abort {
			w.abort()
		}
		w.disable()
		w.mu.Lock()
		w.group = nil
		w.mu.Unlock()
	}
	for _, g := range d.groups {
		g.shutdown()
	}
	d.groups = nil
}

func (d *Device) enableWQ(operand uint32) uint32 {
	if d.state != StateEnabled {
		return CmdStsDevNotEnabled
	}
	if operand&0xfff00 != 0 {
		return CmdStsInvalWQIdx
	}
	idx := int(operand & 0xff)
	if idx >= len(d.wqs) {
		return CmdStsInvalWQIdx
	}
	w := d.wqs[idx]
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.enabled {
		return CmdStsWQEnabled
	}
	dw2 := w.cfg[2]
	xferShift := w.cfg[3] & 0x1f
	batchShift := w.cfg[3] >> 5 & 0xf
	dedicated := dw2&wqModeDedicated != 0
	pasidEn := dw2&wqPASIDEn != 0
	switch {
	case w.group == nil:
		return CmdStsGrpConfig2 // active WQ not in a group
	case w.size() == 0:
		return CmdStsWQSize
	case dw2>>wqPrioShift&0xf == 0:
		return CmdStsWQPriority
	case dedicated && d.wqCap>>49&1 == 0, !dedicated && d.wqCap>>48&1 == 0:
		return CmdStsWQMode
	case dw2&wqBOF != 0 && d.genCap&1 == 0:
		return CmdStsBOF
	case !dedicated && !pasidEn, pasidEn && !d.pasidEn:
		return CmdStsPASIDEn
	case batchShift == 0 || uint64(batchShift) > d.genCap>>21&0xf:
		return CmdStsMaxBatch
	case uint64(xferShift) > d.genCap>>16&0x1f:
		return CmdStsMaxXfer
	}
	p := &wqParams{
		id:        idx,
		dedicated: dedicated,
		maxXfer:   1 << xferShift,
		maxBatch:  1 << batchShift,
		bof:       dw2&wqBOF != 0,
		pasid:     dw2 >> wqPASIDShift & 0xfffff,
		priv:      dw2&wqPriv != 0,
		opcap:     d.opCap,
	}
	if d.cfg.Version >= 0x200 {
		for i := range p.opcap {
			p.opcap[i] = uint64(w.cfg[8+2*i]) | uint64(w.cfg[9+2*i])<<32
		}
	}
	w.params = p
	w.enabled = true
	return CmdStsOK
}

func (d *Device) wqCommand(code, operand uint32) uint32 {
	base := int(operand>>wqOperandGroupShift&0xf) * 16
	bitmap := operand & wqOperandBitmapMask
	var list []*workQueue
	for i := range 16 {
		if bitmap>>i&1 == 0 {
			continue
		}
		if base+i >= len(d.wqs) {
			return CmdStsInvalWQIdx
		}
		list = append(list, d.wqs[base+i])
	}
	if code != CmdResetWQ {
		for _, w := range list {
			w.mu.Lock()
			en := w.enabled
			w.mu.Unlock()
			if !en {
				return CmdStsWQNotEnabled
			}
		}
	}
	for _, w := range list {
		switch code {
		case CmdDisableWQ:
			w.disable()
		case CmdDrainWQ:
			w.drain()
		case CmdAbortWQ:
			w.abort()
		case CmdResetWQ:
			w.abort()
			w.disable()
			w.mu.Lock()
			w.resetCfg(d.state == StateDisabled, d.opCap)
			w.mu.Unlock()
		}
	}
	return CmdStsOK
}
