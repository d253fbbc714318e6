package emulator

import (
	"errors"
	"net/http"
)

// Admin API for instances and IAM bindings, under /emulator/v1/ (see
// adminRoutes for the rest). {ref} is an instance name or numeric id;
// ?zone=Z narrows a name used in several zones.
//
//	GET    /emulator/v1/instances                         → [InstanceState]
//	PUT    /emulator/v1/instances Instance                → Instance (created or replaced)
//	GET    /emulator/v1/instances/{ref}                   → InstanceState
//	DELETE /emulator/v1/instances/{ref}                   → 204
//	PUT    /emulator/v1/instances/{ref}/grants/{email} InstanceGrant → InstanceState
//	PUT    /emulator/v1/instances/{ref}/metadata/{key} {"value": "TRUE"} → InstanceState
//	DELETE /emulator/v1/instances/{ref}/metadata/{key}    → InstanceState
//	GET    /emulator/v1/project/metadata                  → {"key": "value", ...}
//	PUT    /emulator/v1/project/metadata/{key} {"value": "TRUE"} → same as GET
//	DELETE /emulator/v1/project/metadata/{key}            → same as GET
//	PUT    /emulator/v1/accounts/{email}/roles {"computeViewer": true, "iapTunnel": false} → Account
func (e *Emulator) instanceAdminRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /emulator/v1/instances", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, nonNil(e.Instances()))
	})
	mux.HandleFunc("PUT /emulator/v1/instances", func(w http.ResponseWriter, r *http.Request) {
		var in Instance
		if !readAdmin(w, r, &in) {
			return
		}
		n, err := e.PutInstance(in)
		if err != nil {
			adminError(w, http.StatusBadRequest, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, n)
	})
	mux.HandleFunc("GET /emulator/v1/instances/{ref}", func(w http.ResponseWriter, r *http.Request) {
		e.answerInstance(w, r, nil)
	})
	mux.HandleFunc("DELETE /emulator/v1/instances/{ref}", func(w http.ResponseWriter, r *http.Request) {
		if err := e.RemoveInstance(r.URL.Query().Get("zone"), r.PathValue("ref")); err != nil {
			adminError(w, http.StatusNotFound, err.Error())
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("PUT /emulator/v1/instances/{ref}/grants/{email}", func(w http.ResponseWriter, r *http.Request) {
		var g InstanceGrant
		if !readAdmin(w, r, &g) {
			return
		}
		e.answerInstance(w, r, func(zone, ref string) error {
			return e.SetInstanceGrant(zone, ref, r.PathValue("email"), g)
		})
	})
	mux.HandleFunc("PUT /emulator/v1/instances/{ref}/metadata/{key}", func(w http.ResponseWriter, r *http.Request) {
		var v metadataValueJSON
		if !readAdmin(w, r, &v) {
			return
		}
		e.answerInstance(w, r, func(zone, ref string) error {
			return e.SetInstanceMetadata(zone, ref, r.PathValue("key"), v.Value, false)
		})
	})
	mux.HandleFunc("DELETE /emulator/v1/instances/{ref}/metadata/{key}", func(w http.ResponseWriter, r *http.Request) {
		e.answerInstance(w, r, func(zone, ref string) error {
			return e.SetInstanceMetadata(zone, ref, r.PathValue("key"), "", true)
		})
	})
	mux.HandleFunc("GET /emulator/v1/project/metadata", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, e.ProjectMetadata())
	})
	projectMeta := func(remove bool) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			var v metadataValueJSON
			if !remove && !readAdmin(w, r, &v) {
				return
			}
			if err := e.SetProjectMetadata(r.PathValue("key"), v.Value, remove); err != nil {
				adminError(w, http.StatusBadRequest, err.Error())
				return
			}
			writeJSON(w, http.StatusOK, e.ProjectMetadata())
		}
	}
	mux.HandleFunc("PUT /emulator/v1/project/metadata/{key}", projectMeta(false))
	mux.HandleFunc("DELETE /emulator/v1/project/metadata/{key}", projectMeta(true))
	mux.HandleFunc("PUT /emulator/v1/accounts/{email}/roles", func(w http.ResponseWriter, r *http.Request) {
		var req ProjectRoles
		a, ok := e.adminAccount(w, r)
		if !ok || !readAdmin(w, r, &req) {
			return
		}
		if err := e.SetProjectRoles(a.Email, req); err != nil {
			adminError(w, http.StatusNotFound, err.Error())
			return
		}
		a, _ = e.adminAccount(w, r)
		writeJSON(w, http.StatusOK, a)
	})
}

type metadataValueJSON struct {
	Value string `json:"value"`
}

// answerInstance applies change (if any) to the {ref} instance and answers
// with its state: 404 for an unknown instance, 400 for a refused change.
func (e *Emulator) answerInstance(w http.ResponseWriter, r *http.Request, change func(zone, ref string) error) {
	zone, ref := r.URL.Query().Get("zone"), r.PathValue("ref")
	if change != nil {
		if err := change(zone, ref); err != nil {
			code := http.StatusBadRequest
			if errors.Is(err, ErrUnknownInstance) {
				code = http.StatusNotFound
			}
			adminError(w, code, err.Error())
			return
		}
	}
	s, err := e.LookupInstance(zone, ref)
	if err != nil {
		adminError(w, http.StatusNotFound, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, s)
}
