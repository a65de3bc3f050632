// goplugin is the Go peer of kubeaccel's device-plugin benchmark: a minimal device plugin written
// the way production Go plugins are (the kubelet's own v1beta1 stubs from k8s.io/kubelet, one
// grpc-go server, fsnotify for kubelet restarts and the health file), serving simulated devices.
//
//	goplugin [-errors plain|status] [-kubelet-socket PATH] SOCKET_DIR RESOURCE COUNT REPLICAS STATE_FILE
//
// -errors plain (the default) answers a bad Allocate with a plain Go error, which gRPC sends as
// UNKNOWN, as most Go plugins do (squat's generic-device-plugin, NVIDIA's); -errors status answers
// INVALID_ARGUMENT. -kubelet-socket puts kubelet.sock elsewhere than SOCKET_DIR (default
// SOCKET_DIR/kubelet.sock), as NVIDIA's --kubelet-socket does while its own socket stays fixed.
// Devices are sim-0 … sim-(COUNT-1) on two NUMA nodes (first half on 0); with REPLICAS > 1 each is
// advertised as sim-N::R. STATE_FILE is the JSON map of ID to "Healthy"/"Unhealthy"/"Absent" that
// kubeaccel's simulated backend reads; it is re-read when fsnotify reports a write or rename.
// When kubelet.sock is re-created (a kubelet restart) the server is restarted and registered again.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

type plugin struct {
	pluginapi.UnimplementedDevicePluginServer
	count, replicas int
	stateFile       string
	statusErrors    bool // INVALID_ARGUMENT instead of a plain error (UNKNOWN)

	mu      sync.Mutex
	devices []*pluginapi.Device
	index   map[string]string
	changed chan struct{} // closed and replaced on every change
}

func (p *plugin) load() {
	states := map[string]string{}
	if data, err := os.ReadFile(p.stateFile); err == nil && len(data) > 0 {
		if json.Unmarshal(data, &states) != nil {
			return // a partial write: keep the last good state
		}
	}
	var devs []*pluginapi.Device
	index := map[string]string{}
	for i := 0; i < p.count; i++ {
		id := fmt.Sprintf("sim-%d", i)
		state := states[id]
		if state == "Absent" {
			continue
		}
		health := pluginapi.Healthy
		if state == "Unhealthy" {
			health = pluginapi.Unhealthy
		}
		numa := int64(i * 2 / p.count)
		for r := 0; r < p.replicas; r++ {
			name := id
			if p.replicas > 1 {
				name = fmt.Sprintf("%s::%d", id, r)
			}
			index[name] = strconv.Itoa(i)
			devs = append(devs, &pluginapi.Device{ID: name, Health: health,
				Topology: &pluginapi.TopologyInfo{Nodes: []*pluginapi.NUMANode{{ID: numa}}}})
		}
	}
	p.mu.Lock()
	p.devices, p.index = devs, index
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
}

func (p *plugin) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return &pluginapi.DevicePluginOptions{GetPreferredAllocationAvailable: true}, nil
}

func (p *plugin) ListAndWatch(_ *pluginapi.Empty, stream pluginapi.DevicePlugin_ListAndWatchServer) error {
	for {
		p.mu.Lock()
		devs, changed := p.devices, p.changed
		p.mu.Unlock()
		if err := stream.Send(&pluginapi.ListAndWatchResponse{Devices: devs}); err != nil {
			return err
		}
		select {
		case <-changed:
		case <-stream.Context().Done():
			return nil
		}
	}
}

func (p *plugin) GetPreferredAllocation(_ context.Context, req *pluginapi.PreferredAllocationRequest) (*pluginapi.PreferredAllocationResponse, error) {
	out := &pluginapi.PreferredAllocationResponse{}
	for _, c := range req.ContainerRequests {
		chosen := append([]string{}, c.MustIncludeDeviceIDs...)
		taken := map[string]bool{}
		for _, id := range chosen {
			taken[id] = true
		}
		for _, id := range c.AvailableDeviceIDs {
			if len(chosen) >= int(c.AllocationSize) {
				break
			}
			if !taken[id] {
				chosen = append(chosen, id)
				taken[id] = true
			}
		}
		out.ContainerResponses = append(out.ContainerResponses, &pluginapi.ContainerPreferredAllocationResponse{DeviceIDs: chosen})
	}
	return out, nil
}

func (p *plugin) Allocate(_ context.Context, req *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	p.mu.Lock()
	index := p.index
	p.mu.Unlock()
	out := &pluginapi.AllocateResponse{}
	for _, c := range req.ContainerRequests {
		seen := map[string]bool{}
		var indices []string
		for _, id := range c.DevicesIds {
			i, ok := index[id]
			if !ok {
				if p.statusErrors {
					return nil, status.Errorf(codes.InvalidArgument, "unknown device %q", id)
				}
				return nil, fmt.Errorf("unknown device %q", id)
			}
			if !seen[i] {
				seen[i] = true
				indices = append(indices, i)
			}
		}
		sort.Strings(indices)
		out.ContainerResponses = append(out.ContainerResponses, &pluginapi.ContainerAllocateResponse{
			Envs: map[string]string{"KUBEACCEL_DEVICES_EXAMPLE_COM_GO": strings.Join(indices, ",")}})
	}
	return out, nil
}

func (p *plugin) PreStartContainer(context.Context, *pluginapi.PreStartContainerRequest) (*pluginapi.PreStartContainerResponse, error) {
	return &pluginapi.PreStartContainerResponse{}, nil
}

func serve(p *plugin, socket string) (*grpc.Server, error) {
	_ = os.Remove(socket)
	lis, err := net.Listen("unix", socket)
	if err != nil {
		return nil, err
	}
	srv := grpc.NewServer()
	pluginapi.RegisterDevicePluginServer(srv, p)
	go func() { _ = srv.Serve(lis) }()
	return srv, nil
}

func register(kubeletSocket, endpoint, resource string) error {
	conn, err := grpc.NewClient("unix://"+kubeletSocket,
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = pluginapi.NewRegistrationClient(conn).Register(ctx, &pluginapi.RegisterRequest{
		Version: pluginapi.Version, Endpoint: endpoint, ResourceName: resource,
		Options: &pluginapi.DevicePluginOptions{GetPreferredAllocationAvailable: true}},
		grpc.WaitForReady(true)) // the kubelet may have bound but not yet listen()ed
	return err
}

func main() {
	errorsFlag := flag.String("errors", "plain", "how a bad Allocate is answered: plain (UNKNOWN) or status (INVALID_ARGUMENT)")
	kubeletFlag := flag.String("kubelet-socket", "", "the kubelet's socket (default SOCKET_DIR/kubelet.sock)")
	flag.Parse()
	args := flag.Args()
	if len(args) != 5 || (*errorsFlag != "plain" && *errorsFlag != "status") {
		fmt.Fprintln(os.Stderr, "usage: goplugin [-errors plain|status] [-kubelet-socket PATH] SOCKET_DIR RESOURCE COUNT REPLICAS STATE_FILE")
		os.Exit(2)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	dir, resource, stateFile := args[0], args[1], args[4]
	count, _ := strconv.Atoi(args[2])
	replicas, _ := strconv.Atoi(args[3])
	kubeletSocket := *kubeletFlag
	if kubeletSocket == "" {
		kubeletSocket = filepath.Join(dir, filepath.Base(pluginapi.KubeletSocket))
	}
	p := &plugin{count: count, replicas: replicas, stateFile: stateFile, statusErrors: *errorsFlag == "status",
		changed: make(chan struct{})}
	p.load()

	watcher, err := fsnotify.NewWatcher()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	_ = watcher.Add(filepath.Dir(kubeletSocket))
	_ = watcher.Add(filepath.Dir(stateFile))

	endpoint := "goplugin.sock"
	socket := filepath.Join(dir, endpoint)
	start := func() *grpc.Server {
		srv, err := serve(p, socket)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if err := register(kubeletSocket, endpoint, resource); err != nil {
			fmt.Fprintln(os.Stderr, "register:", err)
		}
		return srv
	}
	srv := start()
	for {
		select {
		case ev := <-watcher.Events:
			switch {
			case ev.Name == kubeletSocket && ev.Op&fsnotify.Create != 0:
				srv.Stop()
				srv = start()
			case ev.Name == stateFile && ev.Op&(fsnotify.Write|fsnotify.Create|fsnotify.Remove|fsnotify.Rename) != 0:
				p.load()
			}
		case err := <-watcher.Errors:
			fmt.Fprintln(os.Stderr, "watch:", err)
		case <-sigs:
			srv.Stop()
			_ = os.Remove(socket)
			return
		}
	}
}
