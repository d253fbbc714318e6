package oslogin

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"

	"google.golang.org/api/googleapi"
	"google.golang.org/api/option"
	gen "google.golang.org/api/oslogin/v1"
)

// The hand-written calls replaced google.golang.org/api/oslogin/v1 in the
// agent. These tests keep the generated client as the reference: the same
// call must put the same bytes on the wire, and the same error answer must
// read the same.

// wireRequest is what a call puts on the wire, less the headers that name
// the client library.
type wireRequest struct {
	Method, URI, ContentType, Body string
}

// recorder answers every request with {} and remembers it.
type recorder struct {
	mu   sync.Mutex
	reqs []wireRequest
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	rec.mu.Lock()
	rec.reqs = append(rec.reqs, wireRequest{r.Method, r.RequestURI, r.Header.Get("Content-Type"), string(b)})
	rec.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, "{}")
}

func (rec *recorder) take() []wireRequest {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	r := rec.reqs
	rec.reqs = nil
	return r
}

func TestRESTCallsMatchTheGeneratedClient(t *testing.T) {
	rec := &recorder{}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	ctx := context.Background()
	svc, err := gen.NewService(ctx, option.WithHTTPClient(srv.Client()), option.WithEndpoint(srv.URL+"/"))
	if err != nil {
		t.Fatal(err)
	}
	api, err := newRESTClient(srv.Client(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	const fp = "86dc130b2c2d4a0f9c1d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b"
	accounts := []string{
		"deployer@my-project.iam.gserviceaccount.com",
		"first.last+tag@example.com",
		"o'brien!$&()*,;=:[]~@example.com",
		"we ird%20é?x#y@example.com", // never a real e-mail: checks escaping only
	}
	keyLine := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl a<b>&c"
	for _, account := range accounts {
		user := "users/" + account
		for _, tc := range []struct {
			name string
			gen  func() error
			rest func() error
		}{
			{"import with expiry and regions",
				func() error {
					_, err := svc.Users.ImportSshPublicKey(user, &gen.SshPublicKey{Key: keyLine, ExpirationTimeUsec: 1700000000000000}).
						ProjectId("my-project").Regions("us-central1", "europe-west1").Context(ctx).Do()
					return err
				},
				func() error {
					_, err := api.importSSHPublicKey(ctx, user, &sshPublicKey{Key: keyLine, ExpirationTimeUsec: 1700000000000000},
						"my-project", []string{"us-central1", "europe-west1"})
					return err
				}},
			{"import without expiry or regions",
				func() error {
					_, err := svc.Users.ImportSshPublicKey(user, &gen.SshPublicKey{Key: keyLine}).ProjectId("p").Context(ctx).Do()
					return err
				},
				func() error {
					_, err := api.importSSHPublicKey(ctx, user, &sshPublicKey{Key: keyLine}, "p", nil)
					return err
				}},
			{"patch",
				func() error {
					_, err := svc.Users.SshPublicKeys.Patch(user+"/sshPublicKeys/"+fp, &gen.SshPublicKey{Key: keyLine, ExpirationTimeUsec: 42}).
						UpdateMask("expirationTimeUsec").Context(ctx).Do()
					return err
				},
				func() error {
					return api.patchSSHPublicKey(ctx, user+"/sshPublicKeys/"+fp, &sshPublicKey{Key: keyLine, ExpirationTimeUsec: 42}, "expirationTimeUsec")
				}},
			{"delete",
				func() error {
					_, err := svc.Users.SshPublicKeys.Delete(user + "/sshPublicKeys/" + fp).Context(ctx).Do()
					return err
				},
				func() error { return api.deleteSSHPublicKey(ctx, user+"/sshPublicKeys/"+fp) }},
			{"get login profile",
				func() error {
					_, err := svc.Users.GetLoginProfile(user).ProjectId("my-project").Context(ctx).Do()
					return err
				},
				func() error {
					_, err := api.getLoginProfile(ctx, user, "my-project")
					return err
				}},
			{"provision POSIX account",
				func() error {
					_, err := svc.Users.Projects.ProvisionPosixAccount(user+"/projects/my-project",
						&gen.ProvisionPosixAccountRequest{Regions: []string{"us-central1"}}).Context(ctx).Do()
					return err
				},
				func() error {
					return api.provisionPosixAccount(ctx, user+"/projects/my-project", &provisionPosixAccountRequest{Regions: []string{"us-central1"}})
				}},
			{"sign",
				func() error {
					_, err := svc.Projects.Locations.SignSshPublicKey("projects/my-project/locations/us-central1", &gen.SignSshPublicKeyRequest{
						SshPublicKey: keyLine, ComputeInstance: "projects/my-project/zones/us-central1-a/instances/123", ServiceAccount: account,
					}).Context(ctx).Do()
					return err
				},
				func() error {
					_, err := api.signSSHPublicKey(ctx, "projects/my-project/locations/us-central1", &signSSHPublicKeyRequest{
						SSHPublicKey: keyLine, ComputeInstance: "projects/my-project/zones/us-central1-a/instances/123", ServiceAccount: account,
					})
					return err
				}},
		} {
			if err := tc.gen(); err != nil {
				t.Fatalf("%s, %s: generated client: %v", account, tc.name, err)
			}
			want := rec.take()
			if err := tc.rest(); err != nil {
				t.Fatalf("%s, %s: %v", account, tc.name, err)
			}
			got := rec.take()
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s, %s:\n got %+v\nwant %+v", account, tc.name, got, want)
			}
		}
	}
}

// TestRESTDecodesWhatTheClientReads decodes a profile in the shape Google
// sends (int64 as strings) and checks the fields the client reads.
func TestRESTDecodesWhatTheClientReads(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"loginProfile":{"name":"107615736039570311862","posixAccounts":[{"accountId":"p","gid":"2566290116",`+
			`"homeDirectory":"/home/sa_1","name":"users/a@b/projects/p","operatingSystemType":"LINUX","primary":true,"uid":"2566290116",`+
			`"username":"sa_1"}],"sshPublicKeys":{"fp1":{"fingerprint":"fp1","key":"k","expirationTimeUsec":"1700000000000000","name":"users/a@b/sshPublicKeys/fp1"}}},`+
			`"details":"some detail"}`)
	}))
	defer srv.Close()
	api, err := newRESTClient(srv.Client(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := api.importSSHPublicKey(context.Background(), "users/a@b", &sshPublicKey{Key: "k"}, "p", nil)
	if err != nil {
		t.Fatal(err)
	}
	want := importSSHPublicKeyResponse{Details: "some detail", LoginProfile: &loginProfile{
		Name:          "107615736039570311862",
		PosixAccounts: []*posixAccount{{AccountID: "p", OperatingSystemType: "LINUX", Primary: true, Username: "sa_1"}},
		SSHPublicKeys: map[string]sshPublicKey{"fp1": {Fingerprint: "fp1", Key: "k", ExpirationTimeUsec: 1700000000000000, Name: "users/a@b/sshPublicKeys/fp1"}},
	}}
	if !reflect.DeepEqual(*resp, want) {
		t.Fatalf("decoded %+v\nwant %+v", *resp, want)
	}
}

// TestErrorEnvelopeReadsLikeGoogleapi: every error answer, Google's
// envelope or not, gives the same code, message, reasons, body and
// headers as googleapi.CheckResponse did.
func TestErrorEnvelopeReadsLikeGoogleapi(t *testing.T) {
	bodies := []string{
		"",
		"<!DOCTYPE html><html><head><title>Error 404 (Not Found)!!1</title></head></html>",
		"bad things\nmore",
		"not json {",
		"null",
		"[]",
		"{}",
		`{"error":null}`,
		`{"error":"invalid_token","error_description":"expired"}`,
		`{"error":{"code":403,"message":"The caller does not have permission","status":"PERMISSION_DENIED"}}`,
		`{"error":{"code":400,"message":"Login profile size exceeds 32 KiB. Delete profile values to make additional space.",` +
			`"status":"INVALID_ARGUMENT","errors":[{"message":"Login profile size exceeds 32 KiB. Delete profile values to make additional space.","domain":"global","reason":"badRequest"}]}}`,
		`{"error":{"code":403,"message":"Request had insufficient authentication scopes.","status":"PERMISSION_DENIED",` +
			`"details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"ACCESS_TOKEN_SCOPE_INSUFFICIENT"}],` +
			`"errors":[{"message":"Insufficient Permission","domain":"global","reason":"insufficientPermissions"}]}}`,
		`{"error":{"message":"no code in the envelope","errors":[{"reason":"a"},{"reason":"b"}]}}`,
		`{"error":{"code":429,"message":"envelope code differs from the status"}}`,
		`{"error":{"code":"403","message":"code as a string"}}`,
		`{"error":{"code":403,"message":"details not a list","details":{"a":1}}}`,
		`{"error":{"code":403,"message":"reason not a string","errors":[{"reason":5}]}}`,
		`[{"error":{"code":503,"message":"in an array","errors":[{"reason":"backendError"}]}}]`,
		`[{"error":{"code":503,"message":"first"}},{"error":{"code":400,"message":"second"}}]`,
		`{"ERROR":{"CODE":500,"Message":"keys in another case"}}`,
	}
	for _, status := range []int{400, 401, 403, 404, 429, 503} {
		for _, body := range bodies {
			h := http.Header{"Retry-After": {"7"}, "Date": {"Wed, 02 Dec 2026 01:00:00 GMT"}}
			resp := func() *http.Response {
				return &http.Response{StatusCode: status, Header: h, Body: io.NopCloser(strings.NewReader(body))}
			}
			werr, ok := googleapi.CheckResponse(resp()).(*googleapi.Error)
			if !ok {
				t.Fatalf("googleapi.CheckResponse(%d, %q) is not a *googleapi.Error", status, body)
			}
			b, _ := io.ReadAll(resp().Body)
			got := newAPIError(resp(), b, true)
			var reasons []errorItem
			for _, item := range werr.Errors {
				reasons = append(reasons, errorItem{Reason: item.Reason, Message: item.Message})
			}
			want := &apiError{Code: werr.Code, Message: werr.Message, Errors: reasons, Body: werr.Body, Header: werr.Header}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%d %q:\n got %+v\nwant %+v", status, body, got, want)
			}
		}
	}
}

// TestRESTErrorsThroughTheWire covers what do adds around the envelope:
// the headers stay readable (Retry-After, Date), a 204 is success, an
// oversized or malformed answer is an error that says so.
func TestRESTErrorsThroughTheWire(t *testing.T) {
	var answer func(w http.ResponseWriter)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { answer(w) }))
	defer srv.Close()
	api, err := newRESTClient(srv.Client(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	answer = func(w http.ResponseWriter) {
		w.Header().Set("Retry-After", "3")
		w.WriteHeader(http.StatusTooManyRequests)
		io.WriteString(w, `{"error":{"code":429,"message":"Quota exceeded","errors":[{"message":"Quota exceeded","reason":"rateLimitExceeded"}]}}`)
	}
	err = api.deleteSSHPublicKey(ctx, "users/a@b/sshPublicKeys/x")
	if again, wait := retryable(err); !again || wait.Seconds() != 3 || !definite(err) {
		t.Errorf("429 with Retry-After 3: retryable %v after %v, definite %v; want a retry after 3s of a definite refusal", again, wait, definite(err))
	}
	if want := "OS Login answered 429 Too Many Requests: Quota exceeded (rateLimitExceeded)"; describe(err) != want {
		t.Errorf("describe: %q; want %q", describe(err), want)
	}

	answer = func(w http.ResponseWriter) { w.WriteHeader(http.StatusNoContent) }
	if err := api.deleteSSHPublicKey(ctx, "users/a@b/sshPublicKeys/x"); err != nil {
		t.Errorf("204: %v", err)
	}

	answer = func(w http.ResponseWriter) { io.WriteString(w, "<html>a proxy</html>") }
	if err := api.deleteSSHPublicKey(ctx, "users/a@b/sshPublicKeys/x"); err == nil || !strings.Contains(err.Error(), "not the JSON expected") {
		t.Errorf("HTML with 200: error %v; want one saying the answer is not JSON", err)
	}

	answer = func(w http.ResponseWriter) { w.Write(bytes.Repeat([]byte(" "), maxAnswer+1)) }
	if err := api.deleteSSHPublicKey(ctx, "users/a@b/sshPublicKeys/x"); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("oversized answer: error %v; want one saying it is too large", err)
	}
}
