// The pod sandbox ("pause") process for the local node cluster: holds the pod's namespaces, reaps
// orphaned children, exits 0 on SIGINT/SIGTERM. Stands in for registry.k8s.io/pause, which cannot
// be pulled without a registry (hack/build-images.sh).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sig {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
