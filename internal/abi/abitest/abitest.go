// Package abitest checks the size and field offsets of structs shared with
// the kernel against the numbers gcc gives for the C structs.
package abitest

import "testing"

// Field is one field's offset: got from unsafe.Offsetof, want from C.
type Field struct {
	Name      string
	Got, Want uintptr
}

// CheckLayout reports a size or an offset that differs from the C struct.
func CheckLayout(t testing.TB, name string, size, want uintptr, fields ...Field) {
	t.Helper()
	if size != want {
		t.Errorf("sizeof(%s) = %d, want %d", name, size, want)
	}
	for _, f := range fields {
		if f.Got != f.Want {
			t.Errorf("offsetof(%s.%s) = %d, want %d", name, f.Name, f.Got, f.Want)
		}
	}
}
