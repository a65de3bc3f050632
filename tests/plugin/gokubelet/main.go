// gokubelet plays the kubelet's device manager with the kubelet's own Go API package
// (k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1), so a test can prove that kubeaccel's plugin
// speaks the wire format the real kubelet generates, not only our Python stubs.
//
//	gokubelet SOCKET_DIR TIMEOUT_SECONDS
//
// It serves Registration on SOCKET_DIR/kubelet.sock, waits for one Register, then calls the
// plugin at the registered endpoint and prints one JSON object with what it saw.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

type registration struct {
	requests chan *pluginapi.RegisterRequest
}

func (r *registration) Register(_ context.Context, req *pluginapi.RegisterRequest) (*pluginapi.Empty, error) {
	if req.Version != pluginapi.Version {
		return nil, fmt.Errorf("unsupported version %q", req.Version)
	}
	r.requests <- req
	return &pluginapi.Empty{}, nil
}

type device struct {
	ID     string  `json:"id"`
	Health string  `json:"health"`
	NUMA   []int64 `json:"numa"`
}

type report struct {
	Resource         string            `json:"resource"`
	Endpoint         string            `json:"endpoint"`
	PreStartRequired bool              `json:"pre_start_required"`
	PreferredOffered bool              `json:"preferred_offered"`
	Devices          []device          `json:"devices"`
	Preferred        []string          `json:"preferred"`
	AllocateEnvs     map[string]string `json:"allocate_envs"`
	AllocateDevices  []string          `json:"allocate_devices"`
	UnknownCode      string            `json:"unknown_code"`
	UnknownMessage   string            `json:"unknown_message"`
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "gokubelet: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 3 {
		fail("usage: gokubelet SOCKET_DIR TIMEOUT_SECONDS")
	}
	dir := os.Args[1]
	seconds, err := strconv.ParseFloat(os.Args[2], 64)
	if err != nil {
		fail("bad timeout: %v", err)
	}
	timeout := time.Duration(seconds * float64(time.Second))

	kubeletSocket := filepath.Join(dir, "kubelet.sock")
	_ = os.Remove(kubeletSocket)
	listener, err := net.Listen("unix", kubeletSocket)
	if err != nil {
		fail("listen: %v", err)
	}
	server := grpc.NewServer()
	reg := &registration{requests: make(chan *pluginapi.RegisterRequest, 8)}
	pluginapi.RegisterRegistrationServer(server, reg)
	go func() { _ = server.Serve(listener) }()
	defer server.Stop()

	var req *pluginapi.RegisterRequest
	select {
	case req = <-reg.requests:
	case <-time.After(timeout):
		fail("no plugin registered within %v", timeout)
	}

	conn, err := grpc.NewClient("unix://"+filepath.Join(dir, req.Endpoint),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fail("dial plugin: %v", err)
	}
	defer conn.Close()
	client := pluginapi.NewDevicePluginClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	out := report{Resource: req.ResourceName, Endpoint: req.Endpoint}
	options, err := client.GetDevicePluginOptions(ctx, &pluginapi.Empty{})
	if err != nil {
		fail("GetDevicePluginOptions: %v", err)
	}
	out.PreStartRequired = options.PreStartRequired
	out.PreferredOffered = options.GetPreferredAllocationAvailable

	stream, err := client.ListAndWatch(ctx, &pluginapi.Empty{})
	if err != nil {
		fail("ListAndWatch: %v", err)
	}
	first, err := stream.Recv()
	if err != nil {
		fail("ListAndWatch first list: %v", err)
	}
	var healthy []string
	for _, d := range first.Devices {
		var numa []int64
		if d.Topology != nil {
			for _, n := range d.Topology.Nodes {
				numa = append(numa, n.ID)
			}
		}
		out.Devices = append(out.Devices, device{ID: d.ID, Health: d.Health, NUMA: numa})
		if d.Health == pluginapi.Healthy {
			healthy = append(healthy, d.ID)
		}
	}
	if len(healthy) < 2 {
		fail("need two healthy devices, got %v", healthy)
	}

	preferred, err := client.GetPreferredAllocation(ctx, &pluginapi.PreferredAllocationRequest{
		ContainerRequests: []*pluginapi.ContainerPreferredAllocationRequest{{
			AvailableDeviceIDs:   healthy,
			MustIncludeDeviceIDs: healthy[len(healthy)-1:],
			AllocationSize:       2,
		}},
	})
	if err != nil {
		fail("GetPreferredAllocation: %v", err)
	}
	out.Preferred = preferred.ContainerResponses[0].DeviceIDs

	allocated, err := client.Allocate(ctx, &pluginapi.AllocateRequest{
		ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIDs: []string{healthy[1], healthy[0]}}},
	})
	if err != nil {
		fail("Allocate: %v", err)
	}
	out.AllocateEnvs = allocated.ContainerResponses[0].Envs
	for _, spec := range allocated.ContainerResponses[0].Devices {
		out.AllocateDevices = append(out.AllocateDevices, spec.ContainerPath+"="+spec.HostPath+":"+spec.Permissions)
	}

	_, err = client.Allocate(ctx, &pluginapi.AllocateRequest{
		ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIDs: []string{"no-such-device"}}},
	})
	st, _ := status.FromError(err)
	out.UnknownCode = st.Code().String()
	out.UnknownMessage = st.Message()

	encoded, err := json.Marshal(out)
	if err != nil {
		fail("encode: %v", err)
	}
	fmt.Println(string(encoded))
}
