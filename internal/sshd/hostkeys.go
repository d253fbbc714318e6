package sshd

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
)

// publishHostKeys does what Google's guest agent does at first boot: for
// each public host key line "TYPE BLOB COMMENT" it PUTs BLOB to
// instance/guest-attributes/hostkeys/TYPE on the metadata server, speaking
// as instance (the emulator's default instance when empty).
func publishHostKeys(metadataHost, instance string, pubs []string) error {
	if metadataHost == "" {
		return fmt.Errorf("sshd: publish host keys: no metadata host")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, pub := range pubs {
		f := strings.Fields(pub)
		if len(f) < 2 {
			return fmt.Errorf("sshd: publish host keys: malformed public key %q", pub)
		}
		url := "http://" + metadataHost + "/computeMetadata/v1/instance/guest-attributes/hostkeys/" + f[0]
		req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, strings.NewReader(f[1]))
		if err != nil {
			return fmt.Errorf("sshd: publish host key %s: %w", f[0], err)
		}
		req.Header.Set("Metadata-Flavor", "Google")
		if instance != "" {
			req.Header.Set(emulator.InstanceHeader, instance)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return fmt.Errorf("sshd: publish host key %s: %w", f[0], err)
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("sshd: publish host key %s for instance %q: %s: %s", f[0], instance, resp.Status, strings.TrimSpace(string(body)))
		}
	}
	return nil
}
