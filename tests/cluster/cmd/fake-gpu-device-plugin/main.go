// Command fake-gpu-device-plugin advertises N fake `nvidia.com/gpu` devices to the
// kubelet through the real device-plugin API (v1beta1), so GPU-requesting pods
// schedule on the local real node and go through the kubelet's device admission and
// allocation, as with NVIDIA's plugin. Allocation only sets NVIDIA_VISIBLE_DEVICES:
// there is no GPU behind it, and the pods run on CPU.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

type plugin struct {
	pluginapi.UnimplementedDevicePluginServer
	devices []*pluginapi.Device
}

func (p *plugin) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return &pluginapi.DevicePluginOptions{}, nil
}

func (p *plugin) ListAndWatch(_ *pluginapi.Empty, stream grpc.ServerStreamingServer[pluginapi.ListAndWatchResponse]) error {
	if err := stream.Send(&pluginapi.ListAndWatchResponse{Devices: p.devices}); err != nil {
		return err
	}
	<-stream.Context().Done() // the devices never change; the kubelet ends the stream
	return nil
}

func (p *plugin) Allocate(_ context.Context, request *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	response := &pluginapi.AllocateResponse{}
	for _, container := range request.ContainerRequests {
		response.ContainerResponses = append(response.ContainerResponses, &pluginapi.ContainerAllocateResponse{
			Envs: map[string]string{"NVIDIA_VISIBLE_DEVICES": strings.Join(container.DevicesIds, ",")},
		})
	}
	return response, nil
}

func (p *plugin) PreStartContainer(context.Context, *pluginapi.PreStartContainerRequest) (*pluginapi.PreStartContainerResponse, error) {
	return &pluginapi.PreStartContainerResponse{}, nil
}

func register(kubeletSocket, endpoint, resource string) error {
	conn, err := grpc.NewClient("unix://"+kubeletSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = pluginapi.NewRegistrationClient(conn).Register(ctx, &pluginapi.RegisterRequest{
		Version: pluginapi.Version, Endpoint: endpoint, ResourceName: resource,
	})
	return err
}

func main() {
	count := flag.Int("devices", 8, "number of fake devices to advertise")
	resource := flag.String("resource", "nvidia.com/gpu", "extended resource name")
	dir := flag.String("plugin-dir", pluginapi.DevicePluginPath, "the kubelet's device-plugin directory")
	flag.Parse()

	p := &plugin{}
	for i := 0; i < *count; i++ {
		p.devices = append(p.devices, &pluginapi.Device{ID: fmt.Sprintf("fake-gpu-%d", i), Health: pluginapi.Healthy})
	}
	endpoint := "tunegate-fake-gpu.sock"
	socket := filepath.Join(*dir, endpoint)
	kubeletSocket := filepath.Join(*dir, "kubelet.sock")
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)

	// A starting kubelet empties its device-plugin directory and forgets plugins, so
	// whenever its socket is (re)created, serve on a fresh socket and register again,
	// as real device plugins do.
	var server *grpc.Server
	var registeredFor time.Time
	for {
		select {
		case <-stop:
			if server != nil {
				server.Stop()
			}
			_ = os.Remove(socket)
			return
		case <-time.After(time.Second):
		}
		info, err := os.Stat(kubeletSocket)
		if err != nil || !info.ModTime().After(registeredFor) {
			continue
		}
		if server != nil {
			server.Stop()
		}
		_ = os.Remove(socket)
		listener, err := net.Listen("unix", socket)
		if err != nil {
			log.Fatalf("listen on %s: %v", socket, err)
		}
		server = grpc.NewServer()
		pluginapi.RegisterDevicePluginServer(server, p)
		go func(s *grpc.Server) { _ = s.Serve(listener) }(server)
		if err := register(kubeletSocket, endpoint, *resource); err != nil {
			log.Printf("registering with the kubelet: %v (retrying)", err)
			continue
		}
		registeredFor = info.ModTime()
		log.Printf("registered %d %s devices with the kubelet", *count, *resource)
	}
}
