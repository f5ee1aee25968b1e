// Package legacy holds the PC devices a Linux guest expects at fixed I/O
// ports: a 16550A UART, the CMOS RTC, and godvm's small control ports
// (debug-exit, boot timer, pvpanic, ACPI PM1a, reset). Each is a bus.Device.
package legacy

import (
	"io"
	"sync"
)

// 16550 register offsets (DLAB=0 unless noted).
const (
	uartRBR = 0 // read: receive buffer; write: THR; DLAB: DLL
	uartIER = 1 // DLAB: DLM
	uartIIR = 2 // read: IIR; write: FCR
	uartLCR = 3
	uartMCR = 4
	uartLSR = 5
	uartMSR = 6
	uartSCR = 7

	ierRDI  = 1 << 0 // received data available
	ierTHRI = 1 << 1 // transmitter holding register empty
	ierRLSI = 1 << 2 // receiver line status

	iirNoInt = 0x01
	iirRLSI  = 0x06
	iirRDI   = 0x04
	iirTHRI  = 0x02
	iirFIFO  = 0xc0

	fcrEnable = 1 << 0

	lcrDLAB = 1 << 7

	mcrDTR  = 1 << 0
	mcrRTS  = 1 << 1
	mcrOUT1 = 1 << 2
	mcrOUT2 = 1 << 3 // gates the IRQ on PCs
	mcrLoop = 1 << 4

	lsrDR   = 1 << 0
	lsrOE   = 1 << 1
	lsrTHRE = 1 << 5
	lsrTEMT = 1 << 6

	msrCTS = 1 << 4
	msrDSR = 1 << 5
	msrRI  = 1 << 6
	msrDCD = 1 << 7

	// SerialRXMax is how many input bytes wait for the guest; more are
	// dropped with an overrun.
	SerialRXMax = 4096
)

// Serial is a 16550A UART whose transmitter writes to an io.Writer at once
// (so THR is always empty) and whose receiver is fed by Input. The interrupt
// line is driven through setIRQ whenever its level changes.
type Serial struct {
	mu     sync.Mutex
	out    io.Writer
	setIRQ func(level bool)

	ier, lcr, mcr, scr, fcr uint8
	dll, dlm                uint8
	lsrErr                  uint8 // overrun, cleared by reading LSR
	thriPending             bool  // THR-empty interrupt armed, cleared by IIR read or THR write
	rx                      []byte
	irq                     bool
	txBytes                 uint64
	txBuf                   [1]byte // the byte being written (no allocation per character)
}

// NewSerial makes a UART writing to out; setIRQ may be nil.
func NewSerial(out io.Writer, setIRQ func(level bool)) *Serial {
	if setIRQ == nil {
		setIRQ = func(bool) {}
	}
	return &Serial{out: out, setIRQ: setIRQ, dll: 12 /* 9600 baud */}
}

// TxBytes is how many bytes the guest has written.
func (s *Serial) TxBytes() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.txBytes
}

// Input queues bytes for the guest to read and returns how many were taken.
func (s *Serial) Input(p []byte) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := min(len(p), SerialRXMax-len(s.rx))
	s.rx = append(s.rx, p[:n]...)
	if n < len(p) {
		s.lsrErr |= lsrOE
	}
	s.update()
	return n
}

func (s *Serial) iir() uint8 {
	fifo := uint8(0)
	if s.fcr&fcrEnable != 0 {
		fifo = iirFIFO
	}
	switch {
	case s.ier&ierRLSI != 0 && s.lsrErr != 0:
		return iirRLSI | fifo
	case s.ier&ierRDI != 0 && len(s.rx) > 0:
		return iirRDI | fifo
	case s.ier&ierTHRI != 0 && s.thriPending:
		return iirTHRI | fifo
	}
	return iirNoInt | fifo
}

// update recomputes the interrupt line (called with mu held).
func (s *Serial) update() {
	level := s.iir()&iirNoInt == 0 && s.mcr&mcrOUT2 != 0 && s.mcr&mcrLoop == 0
	if level != s.irq {
		s.irq = level
		s.setIRQ(level)
	}
}

func (s *Serial) Read(off uint64, data []byte) {
	for i := range data {
		data[i] = 0
	}
	if len(data) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	data[0] = s.readReg(off)
	s.update()
}

func (s *Serial) readReg(off uint64) uint8 {
	switch off {
	case uartRBR:
		if s.lcr&lcrDLAB != 0 {
			return s.dll
		}
		if len(s.rx) == 0 {
			return 0
		}
		b := s.rx[0]
		s.rx = s.rx[1:]
		if len(s.rx) == 0 {
			s.rx = nil // let the backing array go
		}
		return b
	case uartIER:
		if s.lcr&lcrDLAB != 0 {
			return s.dlm
		}
		return s.ier
	case uartIIR:
		v := s.iir()
		if v&0x0f == iirTHRI {
			s.thriPending = false // reading IIR acknowledges THRE
		}
		return v
	case uartLCR:
		return s.lcr
	case uartMCR:
		return s.mcr
	case uartLSR:
		v := uint8(lsrTHRE|lsrTEMT) | s.lsrErr
		if len(s.rx) > 0 {
			v |= lsrDR
		}
		s.lsrErr = 0
		return v
	case uartMSR:
		if s.mcr&mcrLoop != 0 {
			var v uint8
			if s.mcr&mcrRTS != 0 {
				v |= msrCTS
			}
			if s.mcr&mcrDTR != 0 {
				v |= msrDSR
			}
			if s.mcr&mcrOUT1 != 0 {
				v |= msrRI
			}
			if s.mcr&mcrOUT2 != 0 {
				v |= msrDCD
			}
			return v
		}
		return msrDCD | msrDSR | msrCTS
	case uartSCR:
		return s.scr
	}
	return 0
}

func (s *Serial) Write(off uint64, data []byte) {
	if len(data) == 0 {
		return
	}
	v := data[0]
	s.mu.Lock()
	defer s.mu.Unlock()
	switch off {
	case uartRBR:
		if s.lcr&lcrDLAB != 0 {
			s.dll = v
			break
		}
		if s.mcr&mcrLoop != 0 {
			if len(s.rx) < SerialRXMax {
				s.rx = append(s.rx, v)
			} else {
				s.lsrErr |= lsrOE
			}
		} else {
			s.txBytes++
			s.txBuf[0] = v
			_, _ = s.out.Write(s.txBuf[:]) // a console that fails must not stop the guest
		}
		s.thriPending = true // sent at once: THR is empty again
	case uartIER:
		if s.lcr&lcrDLAB != 0 {
			s.dlm = v
			break
		}
		if v&ierTHRI != 0 && s.ier&ierTHRI == 0 {
			s.thriPending = true // enabling THRI with an empty THR interrupts
		}
		s.ier = v & 0x0f
	case uartIIR:
		s.fcr = v
		if v&(1<<1) != 0 { // clear receive FIFO
			s.rx = nil
		}
	case uartLCR:
		s.lcr = v
	case uartMCR:
		s.mcr = v & 0x1f
	case uartSCR:
		s.scr = v
	}
	s.update()
}
