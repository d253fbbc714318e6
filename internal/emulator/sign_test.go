package emulator_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	oslogin "google.golang.org/api/oslogin/v1"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
	"github.com/oslogin-agent/oslogin-agent/internal/emulator/emulatortest"
)

// signTarget names the default instance as gcloud does for the v1 method.
type signTarget struct {
	parent, instance, sa string
}

func defaultTarget(t *testing.T, emu *emulator.Emulator) signTarget {
	t.Helper()
	in, err := emu.LookupInstance("", emulator.DefaultInstanceName)
	if err != nil {
		t.Fatal(err)
	}
	return targetOf(in.Instance)
}

func targetOf(in emulator.Instance) signTarget {
	return signTarget{
		parent:   "projects/" + project + "/locations/" + emulator.Region(in.Zone),
		instance: "projects/" + project + "/zones/" + in.Zone + "/instances/" + in.ID,
		sa:       in.ServiceAccount,
	}
}

func sign(svc *oslogin.Service, tg signTarget, key string) (*oslogin.SignSshPublicKeyResponse, error) {
	return svc.Projects.Locations.SignSshPublicKey(tg.parent, &oslogin.SignSshPublicKeyRequest{
		SshPublicKey: key, ComputeInstance: tg.instance, ServiceAccount: tg.sa}).Do()
}

func provisionPosix(t *testing.T, svc *oslogin.Service, email string) {
	t.Helper()
	if _, err := svc.Users.Projects.ProvisionPosixAccount("users/"+email+"/projects/"+project,
		&oslogin.ProvisionPosixAccountRequest{Regions: []string{"us-central1"}}).Do(); err != nil {
		t.Fatalf("provisionPosixAccount: %v", err)
	}
}

// parseSigned splits "<type>-cert-v01@openssh.com <base64> <username>".
func parseSigned(t *testing.T, line string) (*ssh.Certificate, string, string) {
	t.Helper()
	f := strings.Fields(line)
	if len(f) != 3 {
		t.Fatalf("signed key %q: want 3 fields", line)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	cert, ok := pub.(*ssh.Certificate)
	if !ok || f[0] != cert.Type() {
		t.Fatalf("signed key is a %T of type %s", pub, f[0])
	}
	return cert, f[1], f[2]
}

// authorizeFP asks the metadata server, as instance vm, whether the
// certificate with fingerprint fp lets the account log in.
func authorizeFP(t *testing.T, srv *emulatortest.Server, vm, email, fp string) bool {
	t.Helper()
	code, _, body := do(t, http.MethodGet, srv.URL+"/computeMetadata/v1/oslogin/authorize?email="+url.QueryEscape(email)+"&policy=login&fingerprint="+fp,
		"", nil, map[string]string{"Metadata-Flavor": "Google", emulator.InstanceHeader: vm})
	if code != http.StatusOK {
		t.Fatalf("authorize: %d %s", code, body)
	}
	return strings.Contains(body, `"success":true`)
}

// TestSignSshPublicKey signs through the generated client after the 404
// that asks for a POSIX account, and checks the certificate as sshd and
// the guest would read it.
func TestSignSshPublicKey(t *testing.T) {
	srv := emulatortest.Start(t, testConfig())
	svc := serviceFor(t, srv, saEmail)
	tg := defaultTarget(t, srv.Emulator)
	key := sshKey(t, 1, "ci@runner")

	_, err := sign(svc, tg, key)
	if gerr := apiError(t, err); gerr.Code != http.StatusNotFound {
		t.Fatalf("sign without a POSIX account: %v, want 404", err)
	}
	provisionPosix(t, svc, saEmail)
	resp, err := sign(svc, tg, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, b64, username := parseSigned(t, resp.SignedSshPublicKey)
	wantUser := "sa_" + account(t, srv.Emulator, saEmail).UniqueID
	if username != wantUser || cert.KeyId != wantUser || len(cert.ValidPrincipals) != 1 || cert.ValidPrincipals[0] != wantUser {
		t.Errorf("username %q, key id %q, principals %q; want %s", username, cert.KeyId, cert.ValidPrincipals, wantUser)
	}
	if cert.CertType != ssh.UserCert || len(cert.CriticalOptions) != 0 {
		t.Errorf("cert type %d, critical options %v", cert.CertType, cert.CriticalOptions)
	}
	if got := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(cert.Key))); got != strings.Join(strings.Fields(key)[:2], " ") {
		t.Errorf("certified key %s, want %s", got, key)
	}
	now := srv.Emulator.Now()
	after, before := time.Unix(int64(cert.ValidAfter), 0), time.Unix(int64(cert.ValidBefore), 0)
	if d := before.Sub(now); d < 4*time.Minute || d > 5*time.Minute+time.Second {
		t.Errorf("valid for %v more, want about 5 minutes", d)
	}
	if after.After(now) || now.Sub(after) > time.Minute {
		t.Errorf("valid after %v, now %v: want a small backdate", after, now)
	}
	for _, ext := range []string{"permit-X11-forwarding", "permit-agent-forwarding", "permit-port-forwarding", "permit-pty", "permit-user-rc"} {
		if _, ok := cert.Extensions[ext]; !ok {
			t.Errorf("extension %s missing: %v", ext, cert.Extensions)
		}
	}
	// sshd's view: signed by the CA that oslogin/certificates serves.
	code, _, body := mdGet(t, srv, "oslogin/certificates")
	caLine := srv.Emulator.CAPublicKey()
	if code != http.StatusOK || body != `{"trustedCertificateAuthorities":[{"publicKey":"`+caLine+`"}]}` {
		t.Errorf("oslogin/certificates: %d %s", code, body)
	}
	ca, _, _, _, err := ssh.ParseAuthorizedKey([]byte(caLine))
	if err != nil {
		t.Fatal(err)
	}
	checker := ssh.CertChecker{
		IsUserAuthority: func(k ssh.PublicKey) bool { return string(k.Marshal()) == string(ca.Marshal()) },
		Clock:           func() time.Time { return now },
	}
	if _, err := checker.Authenticate(fakeConn(wantUser), cert); err != nil {
		t.Errorf("certificate not accepted for %s: %v", wantUser, err)
	}
	// The guest's view: the first extension in wire order is the fingerprint.
	fp, err := emulator.CertificateFingerprint(b64)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := cert.Extensions["fingerprint@google.com="+fp]; !ok {
		t.Errorf("fingerprint %q is not an extension name: %v", fp, cert.Extensions)
	}
	if first := firstExtensionBySSHKeygen(t, resp.SignedSshPublicKey); first != "" && first != "fingerprint@google.com="+fp {
		t.Errorf("ssh-keygen -L lists %q first, want the fingerprint", first)
	}
	if !authorizeFP(t, srv, emulator.DefaultInstanceName, saEmail, fp) {
		t.Error("authorize refuses the fresh certificate on its instance")
	}
	if authorizeFP(t, srv, emulator.DefaultInstanceName, saEmail, "not-"+fp) {
		t.Error("authorize accepts a fingerprint that was never issued")
	}
	if n := srv.Emulator.Calls()["projects.locations.signSshPublicKey"]; n != 2 {
		t.Errorf("counted %d signSshPublicKey calls, want 2", n)
	}
}

type fakeConn string

func (c fakeConn) User() string        { return string(c) }
func (fakeConn) SessionID() []byte     { return nil }
func (fakeConn) ClientVersion() []byte { return nil }
func (fakeConn) ServerVersion() []byte { return nil }
func (fakeConn) RemoteAddr() net.Addr  { return nil }
func (fakeConn) LocalAddr() net.Addr   { return nil }

// firstExtensionBySSHKeygen lets OpenSSH list the extensions in wire order;
// "" when ssh-keygen is not installed.
func firstExtensionBySSHKeygen(t *testing.T, line string) string {
	t.Helper()
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		t.Log("ssh-keygen not installed: wire order checked by CertificateFingerprint only")
		return ""
	}
	path := filepath.Join(t.TempDir(), "id-cert.pub")
	if err := os.WriteFile(path, []byte(line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ssh-keygen", "-L", "-f", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh-keygen -L: %v\n%s", err, out)
	}
	_, exts, ok := strings.Cut(string(out), "Extensions:")
	if !ok {
		t.Fatalf("ssh-keygen -L lists no extensions:\n%s", out)
	}
	f := strings.Fields(exts)
	if len(f) == 0 {
		t.Fatalf("ssh-keygen -L lists no extensions:\n%s", out)
	}
	return f[0]
}

// TestCertificateFingerprintFirstOnly: only the first extension counts.
func TestCertificateFingerprintFirstOnly(t *testing.T) {
	signer, err := ssh.NewSignerFromKey(ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)))
	if err != nil {
		t.Fatal(err)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(sshKey(t, 2, "")))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		exts map[string]string
		want string
	}{
		{map[string]string{"fingerprint@google.com=abc": "", "permit-pty": ""}, "abc"},
		{map[string]string{"a-first@example.com": "", "fingerprint@google.com=abc": ""}, ""},
		{map[string]string{"permit-pty": ""}, ""},
		{nil, ""},
	} {
		cert := &ssh.Certificate{Key: pub, CertType: ssh.UserCert, ValidBefore: ssh.CertTimeInfinity,
			Permissions: ssh.Permissions{Extensions: tc.exts}}
		if err := cert.SignCert(rand.Reader, signer); err != nil {
			t.Fatal(err)
		}
		got, err := emulator.CertificateFingerprint(base64.StdEncoding.EncodeToString(cert.Marshal()))
		if got != tc.want || (tc.want == "") != (err != nil) {
			t.Errorf("extensions %v: fingerprint %q, %v; want %q", tc.exts, got, err, tc.want)
		}
	}
	if _, err := emulator.CertificateFingerprint(base64.StdEncoding.EncodeToString(pub.Marshal())); err == nil {
		t.Error("a plain key yields a fingerprint")
	}
	if _, err := emulator.CertificateFingerprint("!!"); err == nil {
		t.Error("garbage yields a fingerprint")
	}
}

// TestSignRefusals covers Google's refusals of the v1 method, each with
// its code and reason, through the generated client.
func TestSignRefusals(t *testing.T) {
	cfg := testConfig()
	cfg.Instances = []emulator.Instance{
		{Name: emulator.DefaultInstanceName},
		{Name: "bare", NoServiceAccount: true},
	}
	srv := emulatortest.Start(t, cfg)
	emu := srv.Emulator
	key := sshKey(t, 3, "")
	tg := defaultTarget(t, emu)
	for _, email := range []string{saEmail, userEmail, "denied@example.com"} {
		if _, err := emu.ImportKey(email, "", sshKey(t, 4, email), time.Time{}); err != nil { // creates the POSIX account
			t.Fatal(err)
		}
	}
	bad := func(f func(*signTarget)) signTarget { c := tg; f(&c); return c }
	for _, tc := range []struct {
		name   string
		email  string
		scopes []string
		tg     signTarget
		key    string
		code   int
		reason string
	}{
		{"compute scope only", saEmail, []string{emulator.ScopeCompute}, tg, key, 403, "insufficientPermissions"},
		{"location is a zone", saEmail, nil, bad(func(c *signTarget) { c.parent = "projects/" + project + "/locations/us-central1-a" }), key, 400, "badRequest"},
		{"location of another region", saEmail, nil, bad(func(c *signTarget) { c.parent = "projects/" + project + "/locations/europe-west1" }), key, 400, "badRequest"},
		{"unknown instance id", saEmail, nil, bad(func(c *signTarget) { c.instance = "projects/" + project + "/zones/us-central1-a/instances/12345" }), key, 404, "notFound"},
		{"instance by name", saEmail, nil, bad(func(c *signTarget) {
			c.instance = "projects/" + project + "/zones/us-central1-a/instances/" + emulator.DefaultInstanceName
		}), key, 400, "badRequest"},
		{"instance in another zone", saEmail, nil, bad(func(c *signTarget) { c.instance = strings.Replace(c.instance, "us-central1-a", "us-central1-b", 1) }), key, 404, "notFound"},
		{"instance of another project", saEmail, nil, bad(func(c *signTarget) { c.instance = strings.Replace(c.instance, project, "other-project", 1) }), key, 400, "badRequest"},
		{"unknown project", saEmail, nil, bad(func(c *signTarget) { c.parent = "projects/other-project/locations/us-central1" }), key, 403, "forbidden"},
		{"no computeInstance", saEmail, nil, bad(func(c *signTarget) { c.instance = "" }), key, 400, "badRequest"},
		{"malformed key", saEmail, nil, tg, "ssh-ed25519 !!!", 400, "badRequest"},
		{"no login grant", "denied@example.com", nil, tg, key, 403, "forbidden"},
		{"no actAs on the attached service account", userEmail, nil, tg, key, 403, "forbidden"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := sign(serviceFor(t, srv, tc.email, tc.scopes...), tc.tg, tc.key)
			if gerr := apiError(t, err); gerr.Code != tc.code || len(gerr.Errors) == 0 || gerr.Errors[0].Reason != tc.reason {
				t.Errorf("got %v, want %d %s", err, tc.code, tc.reason)
			}
		})
	}

	// actAs granted: the user signs for the instance.
	if err := emu.SetServiceAccountUsers(saEmail, []string{userEmail}); err != nil {
		t.Fatal(err)
	}
	if _, err := sign(serviceFor(t, srv, userEmail), tg, key); err != nil {
		t.Errorf("with actAs: %v", err)
	}
	// An instance without a service account needs no actAs.
	bare, err := emu.LookupInstance("", "bare")
	if err != nil {
		t.Fatal(err)
	}
	if err := emu.SetServiceAccountUsers(saEmail, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := sign(serviceFor(t, srv, userEmail), targetOf(bare.Instance), key); err != nil {
		t.Errorf("instance without a service account: %v", err)
	}
}

// TestCertificateBinding: a certificate lets its account in on its
// instance only, with the right service account, while valid and while
// the login grant lasts. The wrong serviceAccount is signed (Google
// documents that) and refused by the VM's authorize.
func TestCertificateBinding(t *testing.T) {
	cfg := testConfig()
	cfg.Instances = []emulator.Instance{
		{Name: emulator.DefaultInstanceName},
		{Name: "other"},
		{Name: "bare", NoServiceAccount: true},
	}
	srv := emulatortest.Start(t, cfg)
	emu := srv.Emulator
	svc := serviceFor(t, srv, saEmail)
	provisionPosix(t, svc, saEmail)
	vm := emulator.DefaultInstanceName
	signFP := func(tg signTarget) string {
		t.Helper()
		resp, err := sign(svc, tg, sshKey(t, 5, ""))
		if err != nil {
			t.Fatal(err)
		}
		_, b64, _ := parseSigned(t, resp.SignedSshPublicKey)
		fp, err := emulator.CertificateFingerprint(b64)
		if err != nil {
			t.Fatal(err)
		}
		return fp
	}
	tg := defaultTarget(t, emu)
	fp := signFP(tg)
	if !authorizeFP(t, srv, vm, saEmail, fp) {
		t.Fatal("refused on its own instance")
	}
	if authorizeFP(t, srv, "other", saEmail, fp) {
		t.Error("accepted on another instance")
	}
	if authorizeFP(t, srv, vm, userEmail, fp) {
		t.Error("accepted for another account")
	}

	wrong := tg
	wrong.sa = userEmail
	if fp := signFP(wrong); authorizeFP(t, srv, vm, saEmail, fp) {
		t.Error("certificate signed with the wrong serviceAccount accepted")
	}
	bare, err := emu.LookupInstance("", "bare")
	if err != nil {
		t.Fatal(err)
	}
	withSA := targetOf(bare.Instance)
	withSA.sa = saEmail
	if fp := signFP(withSA); authorizeFP(t, srv, "bare", saEmail, fp) {
		t.Error("serviceAccount given for an instance without one: accepted")
	}
	if fp := signFP(targetOf(bare.Instance)); !authorizeFP(t, srv, "bare", saEmail, fp) {
		t.Error("instance without a service account: refused")
	}

	if err := emu.SetGrant(saEmail, false, false); err != nil {
		t.Fatal(err)
	}
	if authorizeFP(t, srv, vm, saEmail, fp) {
		t.Error("accepted after the login grant was revoked")
	}
	if err := emu.SetGrant(saEmail, true, false); err != nil {
		t.Fatal(err)
	}
	emu.Advance(5*time.Minute + time.Second)
	if authorizeFP(t, srv, vm, saEmail, fp) {
		t.Error("accepted after the certificate expired")
	}
}

// TestSignFaults: faults select the method by its discovery id, and as a
// write (it records a fingerprint).
func TestSignFaults(t *testing.T) {
	srv := emulatortest.Start(t, testConfig())
	svc := serviceFor(t, srv, saEmail)
	provisionPosix(t, svc, saEmail)
	tg := defaultTarget(t, srv.Emulator)
	srv.Emulator.SetFault(emulator.Fault{Methods: "projects.locations.signSshPublicKey", Status: 503, Times: 1})
	if _, err := sign(svc, tg, sshKey(t, 6, "")); apiError(t, err).Code != 503 {
		t.Errorf("with a fault: %v, want 503", err)
	}
	if _, err := sign(svc, tg, sshKey(t, 6, "")); err != nil {
		t.Errorf("after the fault: %v", err)
	}
	srv.Emulator.SetFault(emulator.Fault{Methods: emulator.FaultWrite, Status: 500, Times: 1})
	if _, err := sign(svc, tg, sshKey(t, 6, "")); apiError(t, err).Code != 500 {
		t.Errorf("with a write fault: %v, want 500", err)
	}
}

// TestAdminCA: the admin API serves the CA, and every emulator has its own
// (the key is generated at start and never written).
func TestAdminCA(t *testing.T) {
	a, b := emulatortest.Start(t, testConfig()), emulatortest.Start(t, testConfig())
	code, _, body := do(t, http.MethodGet, a.URL+"/emulator/v1/ca", "", nil, nil)
	if code != http.StatusOK || body != `{"publicKey":"`+a.Emulator.CAPublicKey()+`"}`+"\n" {
		t.Errorf("GET /emulator/v1/ca: %d %q", code, body)
	}
	if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(a.Emulator.CAPublicKey())); err != nil {
		t.Errorf("CA line: %v", err)
	}
	if a.Emulator.CAPublicKey() == b.Emulator.CAPublicKey() {
		t.Error("two emulators share a CA key")
	}
}

// TestSignConcurrentAndLifetime signs in parallel (run with -race): every
// certificate gets its own fingerprint, and Config.CertificateLifetime
// (here from a config file) sets the validity.
func TestSignConcurrentAndLifetime(t *testing.T) {
	cfg, err := emulator.ParseConfig([]byte(`{"certificateLifetime": "90s"}`))
	if err != nil {
		t.Fatal(err)
	}
	srv := emulatortest.Start(t, cfg)
	svc := serviceFor(t, srv, saEmail)
	provisionPosix(t, svc, saEmail)
	tg := defaultTarget(t, srv.Emulator)
	const n = 16
	keys := make([]string, n) // made here: sshKey may call t.Fatal
	for i := range keys {
		keys[i] = sshKey(t, 10+i, "")
	}
	fps := make(chan string, n)
	errs := make(chan error, n)
	for i := range n {
		go func() {
			resp, err := sign(svc, tg, keys[i])
			if err != nil {
				errs <- err
				return
			}
			pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(resp.SignedSshPublicKey))
			cert, ok := pub.(*ssh.Certificate)
			if err != nil || !ok {
				errs <- fmt.Errorf("signed key %q: %v", resp.SignedSshPublicKey, err)
				return
			}
			b64 := strings.Fields(resp.SignedSshPublicKey)[1]
			if d := time.Duration(cert.ValidBefore-cert.ValidAfter) * time.Second; d != 90*time.Second+30*time.Second {
				errs <- fmt.Errorf("validity window %v, want 90s plus the 30s backdate", d)
				return
			}
			fp, err := emulator.CertificateFingerprint(b64)
			if err != nil {
				errs <- err
				return
			}
			fps <- fp
		}()
	}
	seen := map[string]bool{}
	for range n {
		select {
		case err := <-errs:
			t.Error(err)
		case fp := <-fps:
			if seen[fp] {
				t.Errorf("fingerprint %s issued twice", fp)
			}
			seen[fp] = true
			if !authorizeFP(t, srv, emulator.DefaultInstanceName, saEmail, fp) {
				t.Errorf("fingerprint %s refused", fp)
			}
		}
	}
}
