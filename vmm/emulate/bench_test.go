package emulate

import "testing"

func benchEmulate(b *testing.B, code []byte, setup func(r *rig, c *fakeCPU)) {
	r := newRig(b)
	copy(r.ram[codeAddr:], code)
	c := &fakeCPU{sregs: longMode()}
	if setup != nil {
		setup(r, c)
	}
	r.tables(c)
	start := c.regs
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c.regs = start
		c.regs.RIP = codeAddr
		if _, err := r.emu.Emulate(c, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// The emulator's own cost per instruction, without the KVM ioctls (the fake
// vCPU answers at once); on real hosts the exit and the 4-6 ioctls dominate.
func BenchmarkEmulateCLAC(b *testing.B) { benchEmulate(b, []byte{0x0f, 0x01, 0xca}, nil) }

func BenchmarkEmulatePOPCNT(b *testing.B) {
	benchEmulate(b, []byte{0xf3, 0x48, 0x0f, 0xb8, 0xc1}, func(r *rig, c *fakeCPU) { c.regs.RCX = 0xff })
}

func BenchmarkEmulateMOVDIR64B(b *testing.B) {
	benchEmulate(b, []byte{0x66, 0x0f, 0x38, 0xf8, 0x02}, func(r *rig, c *fakeCPU) {
		c.regs.RAX, c.regs.RDX = portalBase, 0x3000
	})
}
