package main

import (
	"os"
	"testing"
)

// asGodvm, set in the environment, makes the test binary run as godvm
// itself: `godvm bench` starts `godvm run` children, and in a test its own
// executable is this binary (TestBenchQuickJSON points GODVM_BINARY here
// when it is not set, so `go test ./cmd/godvm` needs no prebuilt godvm).
const asGodvm = "GODVM_TEST_AS_GODVM"

func TestMain(m *testing.M) {
	if os.Getenv(asGodvm) == "1" {
		main()
	}
	os.Exit(m.Run())
}
