// Command fake-cri serves Kubernetes' own fake CRI runtime (k8s.io/cri-client/pkg/fake, the
// RuntimeService and ImageService the kubelet's tests run against) on a unix socket, so that
// the real crictl can be tested against a real CRI endpoint where no container runtime runs.
// Its sandboxes live in memory: they honour label and state filters, and StopPodSandbox
// makes one NotReady. It serves until SIGTERM or SIGINT.
//
//	fake-cri unix:///run/fake-cri.sock
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/cri-client/pkg/fake"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: fake-cri unix:///path/to/cri.sock")
		os.Exit(2)
	}
	runtime := fake.NewFakeRemoteRuntime()
	if err := runtime.Start(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "fake-cri:", err)
		os.Exit(1)
	}
	fmt.Println("serving", os.Args[1])
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
	runtime.Stop()
}
