// Package virtio implements modern (virtio 1.x) virtio-pci devices: the PCI
// transport with its common/notify/ISR/device-config capabilities, split
// virtqueues, notifications through ioeventfds and interrupts through the
// MSI-X model of devices/pci, and the blk, net, console and rng devices.
//
// Each device has one worker goroutine that waits on its queues' notify
// eventfds (and on backend fds such as a tap) and serves the queues, so
// guest kicks never run device code on a vCPU thread. A malformed ring puts
// the device in DEVICE_NEEDS_RESET instead of stopping the VMM.
package virtio

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"sync"

	"godvm/devices/pci"
	"godvm/devices/platform"
	"godvm/guestmem"
)

// Device IDs (virtio 1.2 §5).
const (
	IDNet     = 1
	IDBlock   = 2
	IDConsole = 3
	IDRNG     = 4
)

// Transport feature bits.
const (
	FIndirectDesc = 1 << 28
	FEventIdx     = 1 << 29
	FVersion1     = 1 << 32
)

// Device status bits.
const (
	StatusAcknowledge = 1
	StatusDriver      = 2
	StatusDriverOK    = 4
	StatusFeaturesOK  = 8
	StatusNeedsReset  = 64
	StatusFailed      = 128
)

// NoVector is the MSI-X "no vector" value.
const NoVector = 0xffff

// BAR0 layout of every godvm virtio device.
const (
	offCommon   = 0x0000
	offISR      = 0x1000
	offDevice   = 0x2000
	offNotify   = 0x3000
	offMSIX     = 0x4000
	offPBA      = 0x6000
	barSize     = 0x8000
	notifyMult  = 4
	commonLen   = 0x3c
	regionLen   = 0x1000
	maxQueues   = 64
	vendorVirt  = 0x1af4
	deviceIDOff = 0x1040
)

// virtio_pci_cap cfg_type values.
const (
	capCommon = 1
	capNotify = 2
	capISR    = 3
	capDevice = 4
	capPCICfg = 5
)

// Env is what a backend gets when the driver sets DRIVER_OK.
type Env struct {
	Mem      *guestmem.Memory
	Queues   []*Queue // nil for queues the driver did not enable
	Features uint64   // negotiated
	// Interrupt tells the driver about used buffers on queue q (if its
	// notification suppression allows).
	Interrupt func(q int)
}

// Backend is one virtio device type behind the transport. Kick and the
// Poller methods run on the device's worker goroutine; ReadConfig and
// WriteConfig on vCPU threads.
type Backend interface {
	DeviceType() uint16
	Features() uint64 // device-specific feature bits offered
	QueueMaxSizes() []uint16
	ReadConfig(off uint64, data []byte)
	WriteConfig(off uint64, data []byte)
	// Activate starts serving after feature negotiation and DRIVER_OK.
	Activate(env *Env) error
	// Kick serves queue q after the driver notified it. A *ChainError puts
	// the device in DEVICE_NEEDS_RESET.
	Kick(q int) error
	// Reset stops the device (the worker has stopped; queues are dropped).
	Reset()
}

// Poller is implemented by backends that also wait on host fds (a tap).
type Poller interface {
	// PollFDs lists the fds to wait on for readability right now.
	PollFDs() []int32
	// Ready is called when fd became readable.
	Ready(fd int32) error
}

type queueCfg struct {
	size, maxSize uint16
	vector        uint16
	enabled       bool
	desc, avail   uint64
	used          uint64
	kick          *platform.EventFD
}

// Device is a virtio-pci function: add it to a pci.Root.
type Device struct {
	*pci.ConfigSpace
	p    *platform.Platform
	be   Backend
	msix *pci.MSIX
	bar0 *pci.Mux

	ctl sync.Mutex // serializes driver writes to the common config (status changes)
	mu  sync.Mutex // guards the fields below
	st  struct {
		devFeatSel, drvFeatSel uint32
		drvFeatures            uint64
		status                 uint8
		generation             uint8
		configVector           uint16
		queueSel               uint16
		isr                    uint8
	}
	queues   []queueCfg
	features uint64 // offered
	notifyAt uint64 // guest address of the notify region while mapped (0: unmapped)

	worker *worker
}

// New builds a virtio-pci device around be; name is for logs and bus maps.
func New(p *platform.Platform, name string, be Backend) (*Device, error) {
	if p == nil || p.Mem == nil || p.IRQ == nil || p.MMIO == nil {
		return nil, fmt.Errorf("virtio: %s: platform lacks guest memory, interrupts or an MMIO bus", name)
	}
	sizes := be.QueueMaxSizes()
	if len(sizes) == 0 || len(sizes) > maxQueues {
		return nil, fmt.Errorf("virtio: %s: %d queues", name, len(sizes))
	}
	id := be.DeviceType()
	d := &Device{p: p, be: be, features: be.Features() | FVersion1 | FIndirectDesc | FEventIdx}
	d.ConfigSpace = pci.NewConfigSpace(p, name, pci.Header{
		VendorID: vendorVirt, DeviceID: deviceIDOff + id, Revision: 1,
		Class: classOf(id), SubsysVendor: vendorVirt, SubsysID: 0x40 + id,
	})
	d.queues = make([]queueCfg, len(sizes))
	for i, s := range sizes {
		if s == 0 || s > MaxQueueSize || s&(s-1) != 0 {
			return nil, fmt.Errorf("virtio: %s: queue %d max size %d", name, i, s)
		}
		ev, err := platform.NewEventFD()
		if err != nil {
			d.closeKicks()
			return nil, err
		}
		d.queues[i] = queueCfg{size: s, maxSize: s, vector: NoVector, kick: ev}
	}
	d.st.configVector = NoVector

	mux := &pci.Mux{}
	d.bar0 = mux
	if err := d.SetBAR(0, pci.BAR{Type: pci.BARMem64, Size: barSize, Dev: mux}); err != nil {
		d.closeKicks()
		return nil, err
	}
	msix, err := pci.NewMSIX(p.IRQ, d.ConfigSpace, pci.MSIXConfig{
		Vectors: len(sizes) + 1, TableBAR: 0, TableOffset: offMSIX, PBABAR: 0, PBAOffset: offPBA,
	})
	if err != nil {
		d.closeKicks()
		return nil, err
	}
	d.msix = msix
	for _, r := range []struct {
		off, size uint64
		name      string
		dev       interface {
			Read(uint64, []byte)
			Write(uint64, []byte)
		}
	}{
		{offCommon, regionLen, "common", (*commonRegion)(d)},
		{offISR, regionLen, "isr", (*isrRegion)(d)},
		{offDevice, regionLen, "device", (*deviceRegion)(d)},
		{offNotify, uint64(len(sizes)) * notifyMult, "notify", (*notifyRegion)(d)},
		{offMSIX, msix.TableSize(), "msix-table", msix.Table()},
		{offPBA, msix.PBASize(), "msix-pba", msix.PBA()},
	} {
		if err := mux.Add(r.off, r.size, r.name, r.dev); err != nil {
			d.Close()
			return nil, err
		}
	}
	for _, c := range []struct {
		typ       byte
		off, size uint32
	}{
		{capCommon, offCommon, commonLen},
		{capNotify, offNotify, uint32(len(sizes)) * notifyMult},
		{capISR, offISR, 1},
		{capDevice, offDevice, regionLen},
	} {
		body := make([]byte, 14, 18)
		body[0] = 16 // cap_len
		body[1] = c.typ
		body[2] = 0 // bar
		binary.LittleEndian.PutUint32(body[6:], c.off)
		binary.LittleEndian.PutUint32(body[10:], c.size)
		if c.typ == capNotify {
			body[0] = 20
			body = binary.LittleEndian.AppendUint32(body, notifyMult)
		}
		if _, err := d.AddCapability(pci.CapVndr, body, nil); err != nil {
			d.Close()
			return nil, err
		}
	}
	if err := d.addPCICfgCap(); err != nil {
		d.Close()
		return nil, err
	}
	d.OnBARChange = d.barChanged
	return d, nil
}

// addPCICfgCap adds VIRTIO_PCI_CAP_PCI_CFG: a window into BAR0 through
// configuration space (bar, offset, length, pci_cfg_data), for firmware
// that cannot map BARs.
func (d *Device) addPCICfgCap() error {
	body := make([]byte, 18)
	mask := make([]byte, 18)
	body[0], body[1] = 20, capPCICfg
	mask[2] = 0xff // bar
	for i := 6; i < 18; i++ {
		mask[i] = 0xff // offset, length, pci_cfg_data
	}
	off, err := d.AddCapability(pci.CapVndr, body, mask)
	if err != nil {
		return err
	}
	data := off + 16
	d.OnWrite(data, 4, func(o uint16, b []byte) {
		if o == data {
			d.pciCfgAccess(off, b)
		}
	})
	d.OnRead(data, 4, func(uint16, []byte) { d.pciCfgAccess(off, nil) })
	return nil
}

// pciCfgAccess performs the BAR access the PCI_CFG capability at cap
// describes: a write of the bytes just written to pci_cfg_data, or (w nil)
// a read into pci_cfg_data.
func (d *Device) pciCfgAccess(cap uint16, w []byte) {
	bar, o, n := d.U8(cap+4), d.U32(cap+8), d.U32(cap+12)
	if bar != 0 || (n != 1 && n != 2 && n != 4) || o%n != 0 || uint64(o)+uint64(n) > barSize {
		return
	}
	if w != nil {
		if uint32(len(w)) >= n {
			d.bar0.Write(uint64(o), w[:n])
		}
		return
	}
	buf := make([]byte, 4)
	d.bar0.Read(uint64(o), buf[:n])
	d.Set(cap+16, buf)
}

func classOf(id uint16) uint32 {
	switch id {
	case IDNet:
		return 0x020000
	case IDBlock:
		return 0x018000
	case IDConsole:
		return 0x078000
	}
	return 0x00ff00
}

// MSIX exposes the device's MSI-X model (for tests and diagnostics).
func (d *Device) MSIX() *pci.MSIX { return d.msix }

// Status returns the device status register.
func (d *Device) Status() uint8 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.st.status
}

// KickFD returns queue q's notify eventfd.
func (d *Device) KickFD(q int) *platform.EventFD { return d.queues[q].kick }

// NotifyAddr is the guest address a driver writes to notify queue q (0
// while BAR0 is unmapped).
func (d *Device) NotifyAddr(q int) uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.notifyAt == 0 {
		return 0
	}
	return d.notifyAt + uint64(q)*notifyMult
}

// barChanged moves the queues' ioeventfds with BAR0.
func (d *Device) barChanged(ch pci.BARChange) {
	if ch.BAR != 0 || d.p.IOEv == nil { // without ioeventfds, notifies exit to notifyRegion
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	base := ch.Addr + offNotify
	for i := range d.queues {
		addr := base + uint64(i)*notifyMult
		var err error
		if ch.Mapped {
			err = d.p.IOEv.AddIOEvent(platform.MMIO, addr, 2, nil, d.queues[i].kick)
		} else {
			err = d.p.IOEv.RemoveIOEvent(platform.MMIO, addr, 2, nil, d.queues[i].kick)
		}
		if err != nil { // notifies still work, through exits to notifyRegion
			slog.Warn("virtio: ioeventfd", "dev", d.Name(), "queue", i, "mapped", ch.Mapped, "err", err)
		}
	}
	if ch.Mapped {
		d.notifyAt = base
	} else {
		d.notifyAt = 0
	}
}

// ConfigChanged tells the driver the device-specific config changed.
func (d *Device) ConfigChanged() {
	d.mu.Lock()
	d.st.generation++
	d.st.isr |= 2
	v := d.st.configVector
	d.mu.Unlock()
	if v != NoVector {
		d.msix.Notify(int(v))
	}
}

// interrupt signals queue q's vector (called by backends through Env).
func (d *Device) interrupt(q int, force bool) {
	d.mu.Lock()
	w := d.worker
	if w == nil || q < 0 || q >= len(d.queues) || w.env.Queues[q] == nil {
		d.mu.Unlock()
		return
	}
	if !force && !w.env.Queues[q].NeedInterrupt() {
		d.mu.Unlock()
		return
	}
	d.st.isr |= 1
	v := d.queues[q].vector
	d.mu.Unlock()
	if v != NoVector {
		d.msix.Notify(int(v))
	}
}

// fail puts the device in DEVICE_NEEDS_RESET after a driver error.
func (d *Device) fail(err error) {
	slog.Warn("virtio: device needs reset", "dev", d.Name(), "err", err)
	d.mu.Lock()
	if d.st.status&StatusNeedsReset != 0 {
		d.mu.Unlock()
		return
	}
	d.st.status |= StatusNeedsReset
	d.mu.Unlock()
	d.ConfigChanged()
}

// Close stops the device and frees its eventfds and vectors.
func (d *Device) Close() error {
	d.stopWorker()
	d.ConfigSpace.Unmap()
	d.closeKicks()
	if d.msix != nil {
		return d.msix.Close()
	}
	return nil
}

func (d *Device) closeKicks() {
	for _, q := range d.queues {
		if q.kick != nil {
			q.kick.Close()
		}
	}
}

// setStatus applies a driver write of the status register (d.ctl held).
func (d *Device) setStatus(v uint8) {
	if v == 0 {
		d.reset()
		return
	}
	d.mu.Lock()
	old := d.st.status
	v |= old & StatusNeedsReset // only a reset clears it
	if v&StatusFeaturesOK != 0 && old&StatusFeaturesOK == 0 {
		f := d.st.drvFeatures
		if f&^d.features != 0 || f&FVersion1 == 0 {
			slog.Warn("virtio: driver features refused", "dev", d.Name(), "features", fmt.Sprintf("%#x", f))
			v &^= StatusFeaturesOK
		}
	}
	d.st.status = v
	start := v&StatusDriverOK != 0 && old&StatusDriverOK == 0 && v&StatusFeaturesOK != 0 && v&StatusFailed == 0
	d.mu.Unlock()
	if start {
		if err := d.activate(); err != nil {
			d.fail(err)
		}
	}
}

// activate builds the queues and starts the worker.
func (d *Device) activate() error {
	d.mu.Lock()
	env := &Env{Mem: d.p.Mem, Features: d.st.drvFeatures, Queues: make([]*Queue, len(d.queues))}
	for i := range d.queues {
		qc := &d.queues[i]
		if !qc.enabled {
			continue
		}
		if qc.size > qc.maxSize {
			d.mu.Unlock()
			return fmt.Errorf("queue %d: size %d > max %d", i, qc.size, qc.maxSize)
		}
		q, err := NewQueue(d.p.Mem, qc.size, qc.desc, qc.avail, qc.used)
		if err != nil {
			d.mu.Unlock()
			return fmt.Errorf("queue %d: %w", i, err)
		}
		q.EventIdx = env.Features&FEventIdx != 0
		q.Indirect = env.Features&FIndirectDesc != 0
		env.Queues[i] = q
	}
	env.Interrupt = func(q int) { d.interrupt(q, false) }
	w, err := newWorker(d, env)
	if err != nil {
		d.mu.Unlock()
		return err
	}
	d.worker = w
	d.mu.Unlock()
	if err := d.be.Activate(env); err != nil {
		d.mu.Lock()
		d.worker = nil
		d.mu.Unlock()
		w.close()
		return err
	}
	w.start()
	return nil
}

func (d *Device) stopWorker() {
	d.mu.Lock()
	w := d.worker
	d.mu.Unlock()
	if w != nil {
		w.stop()
		d.mu.Lock()
		d.worker = nil
		d.mu.Unlock()
		d.be.Reset()
	}
}

// reset returns the device to its initial state (status 0 write).
func (d *Device) reset() {
	d.stopWorker()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.st.status = 0
	d.st.drvFeatures = 0
	d.st.devFeatSel, d.st.drvFeatSel = 0, 0
	d.st.configVector = NoVector
	d.st.queueSel = 0
	d.st.isr = 0
	for i := range d.queues {
		q := &d.queues[i]
		q.size, q.vector, q.enabled = q.maxSize, NoVector, false
		q.desc, q.avail, q.used = 0, 0, 0
		q.kick.Read() // drop stale notifications
	}
}

type isrRegion Device

func (r *isrRegion) Read(off uint64, data []byte) {
	d := (*Device)(r)
	clear(data)
	if off == 0 && len(data) > 0 {
		d.mu.Lock()
		data[0] = d.st.isr
		d.st.isr = 0
		d.mu.Unlock()
	}
}

func (r *isrRegion) Write(off uint64, data []byte) {}

type deviceRegion Device

func (r *deviceRegion) Read(off uint64, data []byte)  { (*Device)(r).be.ReadConfig(off, data) }
func (r *deviceRegion) Write(off uint64, data []byte) { (*Device)(r).be.WriteConfig(off, data) }

// notifyRegion receives queue notifications that were not caught by an
// ioeventfd (no KVM, or registration failed) and forwards them.
type notifyRegion Device

func (r *notifyRegion) Read(off uint64, data []byte) { clear(data) }

func (r *notifyRegion) Write(off uint64, data []byte) {
	d := (*Device)(r)
	if q := int(off / notifyMult); q < len(d.queues) {
		d.queues[q].kick.Signal()
	}
}
