// A save/restore for `kvmsr run --intercept seccomp` (test/run-seccomp.test.ts) with raw system
// calls, as Go programs make them (no libc: built with CGO_ENABLED=0 it is static, and an LD_PRELOAD
// library never sees a call). It prints what test/c/run-static.c prints.
package main

import (
	"encoding/binary"
	"fmt"
	"os"
	"strings"
	"syscall"
	"unsafe"
)

const (
	kvmGetAPIVersion   = 0xae00
	kvmCreateVM        = 0xae01
	kvmGetMsrIndexList = 0xc004ae02
	kvmGetVcpuMmapSize = 0xae04
	kvmCreateVcpu      = 0xae41
	kvmGetMsrs         = 0xc008ae88
	kvmSetMsrs         = 0x4008ae89
	fionread           = 0x541b
)

var idx = []uint32{0xc0000081, 0xc0000082, 0xc0000083, 0xc0000084, 0xc0000102, 0x174, 0x175, 0x176, 0x277}

// ioctl as the C program's "ret": the value, or -errno.
func ioctl(fd int, req uintptr, arg uintptr) int {
	r, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), req, arg)
	if e != 0 {
		return -int(e)
	}
	return int(r)
}

func ioctlBuf(fd int, req uintptr, b []byte) int {
	return ioctl(fd, req, uintptr(unsafe.Pointer(&b[0])))
}

// msrs: struct kvm_msrs with the entries of idx, the values in and out of v.
func msrs(vcpu int, req uintptr, v []uint64) int {
	b := make([]byte, 8+16*len(idx))
	binary.LittleEndian.PutUint32(b, uint32(len(idx)))
	for i, x := range idx {
		binary.LittleEndian.PutUint32(b[8+16*i:], x)
		binary.LittleEndian.PutUint64(b[8+16*i+8:], v[i])
	}
	r := ioctlBuf(vcpu, req, b)
	for i := range idx {
		v[i] = binary.LittleEndian.Uint64(b[8+16*i+8:])
	}
	return r
}

func printMsrs(what string, r int, v []uint64) {
	var s strings.Builder
	for i, x := range idx {
		fmt.Fprintf(&s, " 0x%x=0x%x", x, v[i])
	}
	fmt.Printf("%s ret %d:%s\n", what, r, s.String())
}

func makeVcpu(sys int) int {
	vm := ioctl(sys, kvmCreateVM, 0)
	vcpu := -1
	if vm >= 0 {
		vcpu = ioctl(vm, kvmCreateVcpu, 0)
	}
	ok := func(x int) string {
		if x >= 0 {
			return "ok"
		}
		return "failed"
	}
	fmt.Printf("create_vm %s create_vcpu %s\n", ok(vm), ok(vcpu))
	return vcpu
}

func main() {
	sys, err := syscall.Open("/dev/kvm", syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		fmt.Printf("open failed errno %d\n", err.(syscall.Errno))
		os.Exit(1)
	}
	fmt.Printf("open ok\napi %d\n", ioctl(sys, kvmGetAPIVersion, 0))
	vcpu := makeVcpu(sys)
	if vcpu < 0 {
		os.Exit(1)
	}
	size := ioctl(sys, kvmGetVcpuMmapSize, 0)
	run, err := syscall.Mmap(vcpu, 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		fmt.Printf("mmap failed errno %d\n", err.(syscall.Errno))
		os.Exit(1)
	}
	fmt.Printf("mmap_size %d exit_reason %d\n", size, binary.LittleEndian.Uint32(run[8:]))

	list := make([]byte, 4*(1+4096))
	r := ioctlBuf(sys, kvmGetMsrIndexList, list)
	fmt.Printf("index_list probe ret %d nmsrs %d\n", r, binary.LittleEndian.Uint32(list))
	binary.LittleEndian.PutUint32(list, 4096)
	r = ioctlBuf(sys, kvmGetMsrIndexList, list)
	n := binary.LittleEndian.Uint32(list)
	var s strings.Builder
	for i := uint32(0); i < n && i < 4096; i++ {
		fmt.Fprintf(&s, " 0x%x", binary.LittleEndian.Uint32(list[4+4*i:]))
	}
	fmt.Printf("index_list ret %d nmsrs %d:%s\n", r, n, s.String())

	g := []uint64{0x0023001000000000, 0xffffffff81a00080, 0xffffffff81a01000, 0x47700, 0xffff888003a00000,
		0x10, 0xfffffe0000003000, 0xffffffff81a01200, 0x0007010600070106}
	printMsrs("set_msrs", msrs(vcpu, kvmSetMsrs, g), g)
	saved := make([]uint64, len(idx))
	printMsrs("save get_msrs", msrs(vcpu, kvmGetMsrs, saved), saved)
	vcpu2 := makeVcpu(sys)
	if vcpu2 < 0 {
		os.Exit(1)
	}
	fresh := make([]uint64, len(idx))
	printMsrs("fresh get_msrs", msrs(vcpu2, kvmGetMsrs, fresh), fresh)
	put := append([]uint64(nil), saved...)
	printMsrs("restore set_msrs", msrs(vcpu2, kvmSetMsrs, put), put)
	back := make([]uint64, len(idx))
	printMsrs("restored get_msrs", msrs(vcpu2, kvmGetMsrs, back), back)
	same := "same"
	for i := range back {
		if back[i] != saved[i] {
			same = "differs"
		}
	}
	fmt.Printf("restored %s\n", same)

	var p [2]int
	if syscall.Pipe2(p[:], syscall.O_CLOEXEC) != nil {
		os.Exit(1)
	}
	syscall.Write(p[1], []byte("hello"))
	var avail int32 = -1
	r = ioctl(p[0], fionread, uintptr(unsafe.Pointer(&avail)))
	fmt.Printf("pipe FIONREAD ret %d n %d\n", r, avail)
	fmt.Printf("pipe KVM_GET_API_VERSION ret %d\n", ioctl(p[0], kvmGetAPIVersion, 0))

	maps, _ := os.ReadFile("/proc/self/maps")
	mapped := 0
	if strings.Contains(string(maps), "libkvmsr-run") {
		mapped = 1
	}
	fmt.Printf("preload library mapped %d\n", mapped)
}
