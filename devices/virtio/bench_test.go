package virtio

import (
	"encoding/binary"
	"sync/atomic"
	"testing"

	"godvm/devices/platform"
)

// benchBlk issues b.N requests of size bytes, depth at a time (one kick per
// batch), through the simulated driver: rings in guest memory, kick by
// ioeventfd, completion by the MSI-X vector's eventfd.
func benchBlk(b *testing.B, typ uint32, size uint32, depth int) {
	const imgSize = 64 << 20
	r := newBlkRig(b, BlockOptions{Path: newImage(b, imgSize)})
	d, q := r.d, r.d.q[0]
	type req struct{ hdr, data, st uint64 }
	reqs := make([]req, depth)
	for i := range reqs {
		reqs[i] = req{d.alloc(16), d.alloc(uint64(size)), d.alloc(1)}
	}
	sectors := uint64(imgSize-int(size)) / 512
	b.SetBytes(int64(size))
	b.ResetTimer()
	var n uint64
	for done := 0; done < b.N; {
		batch := min(depth, b.N-done)
		for i := 0; i < batch; i++ {
			var h [16]byte
			binary.LittleEndian.PutUint32(h[0:], typ)
			binary.LittleEndian.PutUint64(h[8:], (n*uint64(size)/512)%sectors&^7)
			n++
			r.m.mem.WriteAt(h[:], reqs[i].hdr)
			write := typ == BlkTIn
			segs := []seg{{reqs[i].hdr, 16, false}, {reqs[i].data, size, write}, {reqs[i].st, 1, true}}
			head := q.free % q.size
			q.free += 3
			for j, s := range segs {
				var dsc [16]byte
				binary.LittleEndian.PutUint64(dsc[0:], s.addr)
				binary.LittleEndian.PutUint32(dsc[8:], s.n)
				fl := uint16(0)
				if s.write {
					fl |= DescFWrite
				}
				if j < 2 {
					fl |= DescFNext
					binary.LittleEndian.PutUint16(dsc[14:], (head+uint16(j)+1)%q.size)
				}
				binary.LittleEndian.PutUint16(dsc[12:], fl)
				r.m.mem.WriteAt(dsc[:], q.desc+16*uint64((head+uint16(j))%q.size))
			}
			r.m.mem.WriteU16(q.avail+4+2*uint64(q.availIdx%q.size), head)
			q.availIdx++
		}
		r.m.mem.StoreU16Release(q.avail+2, q.availIdx)
		d.kick(q)
		d.waitUsed(q, batch)
		done += batch
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
	if st, _ := r.m.mem.ReadU8(reqs[0].st); st != BlkSOK {
		b.Fatalf("status %d", st)
	}
}

func BenchmarkBlockRead4KDepth1(b *testing.B)   { benchBlk(b, BlkTIn, 4096, 1) }
func BenchmarkBlockRead4KDepth32(b *testing.B)  { benchBlk(b, BlkTIn, 4096, 32) }
func BenchmarkBlockWrite4KDepth32(b *testing.B) { benchBlk(b, BlkTOut, 4096, 32) }
func BenchmarkBlockRead64KDepth32(b *testing.B) { benchBlk(b, BlkTIn, 64<<10, 32) }
func BenchmarkBlockWrite1MDepth8(b *testing.B)  { benchBlk(b, BlkTOut, 1<<20, 8) }

// BenchmarkNotifyLatency measures kick (ioeventfd signal) -> worker ->
// used ring -> MSI-X eventfd for one GET_ID request at a time: ns/op is the
// round trip the VMM adds to a request.
func BenchmarkNotifyLatency(b *testing.B) {
	r := newBlkRig(b, BlockOptions{Path: newImage(b, 1<<20)})
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r.req(BlkTGetID, 0, nil, 20)
	}
}

// BenchmarkEventfdPingPong is the floor under BenchmarkNotifyLatency: two
// threads bouncing a signal over a pair of eventfds with poll, the same
// wake-ups a kick and its completion interrupt cost, with no device work.
func BenchmarkEventfdPingPong(b *testing.B) {
	ping, err := platform.NewEventFD()
	if err != nil {
		b.Fatal(err)
	}
	pong, err := platform.NewEventFD()
	if err != nil {
		b.Fatal(err)
	}
	defer ping.Close()
	defer pong.Close()
	done := make(chan struct{})
	var stop atomic.Bool
	go func() {
		defer close(done)
		for {
			if _, err := ping.Wait(-1); err != nil || stop.Load() {
				return
			}
			pong.Signal()
		}
	}()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ping.Signal()
		pong.Wait(-1)
	}
	b.StopTimer()
	stop.Store(true)
	ping.Signal()
	<-done
}
