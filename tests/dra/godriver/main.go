// godriver is a DRA driver written the way helper-based drivers are (kubernetes-sigs/dra-example-driver
// and others): on the upstream kubelet-plugin helper k8s.io/dynamic-resource-allocation/kubeletplugin
// at the cluster's version, so `kubeaccel dra check` is graded against the helper's real behaviour:
//
//   - the helper registers and serves; it never re-creates its registration socket once deleted;
//
//   - ResourceSlices are published through the helper's controller, asynchronously, here after
//     -publish-delay (the controller may take a while after registration);
//
//   - the helper fetches every claim of a NodePrepareResources call first and fails the whole call
//     when one cannot be read (an unknown claim is not a per-claim error);
//
//   - a driver-wide CDI spec is written once at start (device "common", as dra-example-driver does)
//     and named in every claim's CDI IDs; each claim gets its own spec, removed on unprepare;
//
//   - health is served as the helper serves it (v1 and v1alpha1 by default; -health chooses).
//
//   - with -checkpoint FILE, prepared claims are kept in a JSON file rewritten whole (and fsynced)
//     on every change, as dra-example-driver's checkpoint is: the peer of `bench/dra.py --node`.
//
//     godriver -driver NAME -node NODE -kubeconfig FILE -registry-dir DIR -plugin-dir DIR -cdi-dir DIR
//     [-devices N] [-publish-delay D] [-health both|v1|v1alpha1|off|unsupported]
//     [-pool NAME] [-device-prefix P] [-publish=false] [-checkpoint FILE] [-kube-api-qps Q] [-kube-api-burst B]
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	"k8s.io/dynamic-resource-allocation/resourceslice"
	"k8s.io/klog/v2"
)

type driver struct {
	name, node, cdiDir, kind string
	pool, checkpoint         string
	devices                  []string
	health                   string

	mu       sync.Mutex
	prepared map[types.UID][]kubeletplugin.Device // the checkpoint (in memory: enough for a test driver)
}

func (d *driver) specPath(name string) string {
	return filepath.Join(d.cdiDir, "godriver-"+name+".json")
}

// writeSpec writes a CDI spec atomically (temp file + rename), as CDI consumers expect.
func (d *driver) writeSpec(file string, devices map[string][]string) error {
	type edits struct {
		Env []string `json:"env"`
	}
	type device struct {
		Name           string `json:"name"`
		ContainerEdits edits  `json:"containerEdits"`
	}
	spec := struct {
		CDIVersion string   `json:"cdiVersion"`
		Kind       string   `json:"kind"`
		Devices    []device `json:"devices"`
	}{CDIVersion: "0.5.0", Kind: d.kind}
	for name, env := range devices {
		spec.Devices = append(spec.Devices, device{Name: name, ContainerEdits: edits{Env: env}})
	}
	data, err := json.Marshal(spec)
	if err != nil {
		return err
	}
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, file)
}

func (d *driver) PrepareResourceClaims(ctx context.Context, claims []*resourceapi.ResourceClaim) (map[types.UID]kubeletplugin.PrepareResult, error) {
	out := map[types.UID]kubeletplugin.PrepareResult{}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, claim := range claims {
		if done, ok := d.prepared[claim.UID]; ok {
			out[claim.UID] = kubeletplugin.PrepareResult{Devices: done}
			continue
		}
		var devices []kubeletplugin.Device
		specDevices := map[string][]string{}
		for _, result := range claim.Status.Allocation.Devices.Results {
			if result.Driver != d.name {
				continue
			}
			if result.Pool != d.pool || !contains(d.devices, result.Device) {
				out[claim.UID] = kubeletplugin.PrepareResult{Err: fmt.Errorf("device %s/%s is not on this node", result.Pool, result.Device)}
				devices = nil
				break
			}
			cdiName := string(claim.UID) + "-" + result.Device
			specDevices[cdiName] = []string{"GODRIVER_DEVICE=" + result.Device}
			devices = append(devices, kubeletplugin.Device{
				Requests: []string{result.Request}, PoolName: result.Pool, DeviceName: result.Device,
				CDIDeviceIDs: []string{d.kind + "=common", d.kind + "=" + cdiName}})
		}
		if _, failed := out[claim.UID]; failed {
			continue
		}
		if err := d.writeSpec(d.specPath(string(claim.UID)), specDevices); err != nil {
			out[claim.UID] = kubeletplugin.PrepareResult{Err: err}
			continue
		}
		d.prepared[claim.UID] = devices
		if err := d.save(); err != nil {
			delete(d.prepared, claim.UID)
			out[claim.UID] = kubeletplugin.PrepareResult{Err: err}
			continue
		}
		out[claim.UID] = kubeletplugin.PrepareResult{Devices: devices}
	}
	return out, nil
}

// save writes the whole checkpoint, fsynced, before a claim's answer (a no-op without -checkpoint).
func (d *driver) save() error {
	if d.checkpoint == "" {
		return nil
	}
	data, err := json.Marshal(d.prepared)
	if err != nil {
		return err
	}
	tmp := d.checkpoint + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, d.checkpoint)
}

// load reads the checkpoint a previous run saved (none yet: an empty one).
func (d *driver) load() error {
	if d.checkpoint == "" {
		return nil
	}
	data, err := os.ReadFile(d.checkpoint)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return json.Unmarshal(data, &d.prepared)
}

func (d *driver) UnprepareResourceClaims(ctx context.Context, claims []kubeletplugin.NamespacedObject) (map[types.UID]error, error) {
	out := map[types.UID]error{}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, claim := range claims {
		err := os.Remove(d.specPath(string(claim.UID)))
		if errors.Is(err, os.ErrNotExist) {
			err = nil
		}
		delete(d.prepared, claim.UID)
		if err == nil {
			err = d.save()
		}
		out[claim.UID] = err
	}
	return out, nil
}

func (d *driver) HandleError(ctx context.Context, err error, msg string) {
	runtime.HandleErrorWithContext(ctx, err, msg)
}

func (d *driver) WatchHealthStatus(ctx context.Context, reports chan<- kubeletplugin.DeviceHealthReport) error {
	if d.health == "unsupported" {
		return kubeletplugin.ErrHealthNotSupported
	}
	for {
		report := kubeletplugin.DeviceHealthReport{}
		for _, name := range d.devices {
			report.Devices = append(report.Devices, kubeletplugin.DeviceHealth{PoolName: d.node, DeviceName: name,
				Health: kubeletplugin.HealthStatusHealthy, LastUpdated: time.Now()})
		}
		select {
		case <-ctx.Done():
			return nil
		case reports <- report:
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(10 * time.Second): // within the kubelet's 30 s health timeout
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func main() {
	name := flag.String("driver", "godriver.example.com", "driver name")
	node := flag.String("node", "", "node name")
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig file")
	registryDir := flag.String("registry-dir", kubeletplugin.KubeletRegistryDir, "plugin registration directory")
	pluginDir := flag.String("plugin-dir", "", "directory of the DRA socket (default /var/lib/kubelet/plugins/DRIVER)")
	cdiDir := flag.String("cdi-dir", "/var/run/cdi", "CDI spec directory")
	count := flag.Int("devices", 4, "number of devices")
	delay := flag.Duration("publish-delay", 0, "wait this long after registering before publishing ResourceSlices")
	health := flag.String("health", "both", "both, v1, v1alpha1, off or unsupported")
	pool := flag.String("pool", "", "pool name of the devices (default: the node name)")
	prefix := flag.String("device-prefix", "dev-", "device names are this and a number")
	publish := flag.Bool("publish", true, "publish ResourceSlices (false: serve claims only, e.g. for a benchmark)")
	checkpoint := flag.String("checkpoint", "", "keep prepared claims in this JSON file (rewritten whole on every change)")
	qps := flag.Float64("kube-api-qps", 5, "client-go QPS (dra-example-driver's default)")
	burst := flag.Int("kube-api-burst", 10, "client-go burst (dra-example-driver's default)")
	flag.Parse()
	if *node == "" || *kubeconfig == "" {
		fmt.Fprintln(os.Stderr, "godriver: -node and -kubeconfig are required")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, *name, *node, *kubeconfig, *registryDir, *pluginDir, *cdiDir, *count, *delay, *health, *pool,
		*prefix, *checkpoint, *publish, float32(*qps), *burst); err != nil {
		fmt.Fprintln(os.Stderr, "godriver:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, name, node, kubeconfig, registryDir, pluginDir, cdiDir string, count int,
	delay time.Duration, health, pool, prefix, checkpoint string, publish bool, qps float32, burst int) error {
	config, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	config.QPS, config.Burst = qps, burst // client-go's defaults (5, 10) pace claim reads at 200 ms each
	client, err := kubernetes.NewForConfig(config)
	if err != nil {
		return err
	}
	if pool == "" {
		pool = node
	}
	d := &driver{name: name, node: node, cdiDir: cdiDir, health: health, pool: pool, checkpoint: checkpoint,
		kind: name + "/dev", prepared: map[types.UID][]kubeletplugin.Device{}}
	for i := 0; i < count; i++ {
		d.devices = append(d.devices, fmt.Sprintf("%s%d", prefix, i))
	}
	if err := d.load(); err != nil {
		return err
	}
	// The driver-wide spec, written once at start and never per claim.
	if err := d.writeSpec(d.specPath("common"), map[string][]string{"common": {"GODRIVER=" + strings.ToUpper(name)}}); err != nil {
		return err
	}
	opts := []kubeletplugin.Option{
		kubeletplugin.DriverName(name), kubeletplugin.NodeName(node), kubeletplugin.KubeClient(client),
		kubeletplugin.RegistrarDirectoryPath(registryDir),
	}
	if pluginDir != "" {
		if err := os.MkdirAll(pluginDir, 0o750); err != nil { // the helper expects it to exist
			return err
		}
		opts = append(opts, kubeletplugin.PluginDataDirectoryPath(pluginDir))
	}
	switch health {
	case "v1":
		opts = append(opts, kubeletplugin.HealthV1alpha1(false))
	case "v1alpha1": // what helper-based drivers of v0.36 advertise
		opts = append(opts, kubeletplugin.HealthV1(false))
	case "off":
		opts = append(opts, kubeletplugin.HealthService(false))
	}
	helper, err := kubeletplugin.Start(ctx, d, opts...)
	if err != nil {
		return err
	}
	defer helper.Stop()
	if !publish {
		<-ctx.Done()
		return nil
	}
	select {
	case <-ctx.Done():
		return nil
	case <-time.After(delay):
	}
	var devices []resourceapi.Device
	for _, name := range d.devices {
		devices = append(devices, resourceapi.Device{Name: name})
	}
	if err := helper.PublishResources(ctx, resourceslice.DriverResources{Pools: map[string]resourceslice.Pool{
		node: {Slices: []resourceslice.Slice{{Devices: devices}}}}}); err != nil {
		return err
	}
	klog.FromContext(ctx).Info("published", "devices", len(devices))
	<-ctx.Done()
	return nil
}
