package emulator

import (
	"net/http"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator/iaprelay"
)

// Admin API for the IAP relay, under /emulator/v1/:
//
//	GET    /emulator/v1/relay/stats         → iaprelay.Stats
//	GET    /emulator/v1/relay/faults        → [iaprelay.Fault]
//	POST   /emulator/v1/relay/faults Fault  → [iaprelay.Fault]
//	DELETE /emulator/v1/relay/faults        → 204
//
// Relay fault JSON: {"instance":"vm1","path":"connect","times":2,
// "direction":"down","afterBytes":1048576,"rate":0.01,"drop":true,
// "stall":"2s","refuseCode":4033,"refuseStatus":503,"throttle":65536,
// "latency":"20ms"}; see iaprelay.Fault.
func (e *Emulator) relayAdminRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /emulator/v1/relay/stats", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, e.relay.Stats())
	})
	mux.HandleFunc("GET /emulator/v1/relay/faults", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, nonNil(e.relay.Faults()))
	})
	mux.HandleFunc("POST /emulator/v1/relay/faults", func(w http.ResponseWriter, r *http.Request) {
		var f iaprelay.Fault
		if !readAdmin(w, r, &f) {
			return
		}
		if err := e.relay.SetFault(f); err != nil {
			adminError(w, http.StatusBadRequest, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, nonNil(e.relay.Faults()))
	})
	mux.HandleFunc("DELETE /emulator/v1/relay/faults", func(w http.ResponseWriter, r *http.Request) {
		e.relay.ClearFaults()
		w.WriteHeader(http.StatusNoContent)
	})
}

// Relay is the emulator's IAP relay, for tests that set faults or read
// statistics in-process.
func (e *Emulator) Relay() *iaprelay.Relay { return e.relay }
