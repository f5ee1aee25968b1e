package vmm

import (
	"fmt"

	"godvm/kvm"
)

// KVMVFIO is the VM's KVM-VFIO pseudo-device (KVM_DEV_TYPE_VFIO): kernel
// VFIO tells KVM about each group or device cdev through it. It has the
// methods of vfio/kernel.KVMDevice, so a DeviceFunc passes it to kernel.WithKVM.
type KVMVFIO struct{ d *kvm.Device }

// AddFile is KVM_DEV_VFIO_FILE_ADD for a VFIO group or device cdev fd.
func (k *KVMVFIO) AddFile(fd int) error { return k.d.VFIOAddFile(fd) }

// DelFile is KVM_DEV_VFIO_FILE_DEL.
func (k *KVMVFIO) DelFile(fd int) error { return k.d.VFIODelFile(fd) }

// KVMVFIO returns the VM's KVM-VFIO device, creating it on the first call
// (KVM allows one per VM; every kernel VFIO device shares it). Close
// releases it.
func (m *Machine) KVMVFIO() (*KVMVFIO, error) {
	if m.kvmVFIO != nil {
		return m.kvmVFIO, nil
	}
	d, err := m.vm.CreateVFIODevice()
	if err != nil {
		return nil, fmt.Errorf("creating the KVM VFIO device: %w", err)
	}
	m.closers = append(m.closers, d.Close)
	m.kvmVFIO = &KVMVFIO{d}
	return m.kvmVFIO, nil
}
