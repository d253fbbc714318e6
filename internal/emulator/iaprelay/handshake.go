package iaprelay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/coder/websocket"
)

// handshake is one /v4/connect or /v4/reconnect request.
type handshake struct {
	r         *Relay
	w         http.ResponseWriter
	req       *http.Request
	q         url.Values
	reconnect bool
}

func (h *handshake) path() string {
	if h.reconnect {
		return "reconnect"
	}
	return "connect"
}

// reject answers before the upgrade with an HTTP error.
func (h *handshake) reject(status int, format string, args ...any) {
	h.r.count(func(st *Stats) { st.Rejected++ })
	msg := fmt.Sprintf(format, args...)
	h.r.log.Info("iap handshake rejected", "path", h.path(), "status", status, "why", msg)
	http.Error(h.w, msg, status)
}

// refuse closes a just-upgraded WebSocket with code and its reason text.
func (h *handshake) refuse(ws *websocket.Conn, code CloseCode, why string) {
	h.r.count(func(st *Stats) { st.Rejected++ })
	h.r.log.Info("iap handshake refused", "path", h.path(), "code", int(code), "why", why)
	ws.Close(websocket.StatusCode(code), code.Reason())
}

// serve checks, in IAP's order, what can be answered before the upgrade
// (subprotocol, token, query syntax: HTTP errors), upgrades, and answers
// everything about the target with close codes: lookup 4047, IAM 4033,
// backend 4003 (reconnect: sid 4001, zone 4051, ack 4074).
func (h *handshake) serve() {
	instance := h.q.Get("instance")
	if h.reconnect {
		instance = h.r.sessionInstance(h.q.Get("sid"))
	}
	if f, ok := h.r.refusal(instance, h.path(), true); ok {
		h.reject(f.RefuseStatus, "injected fault")
		return
	}
	if h.req.Method != http.MethodGet {
		h.reject(http.StatusMethodNotAllowed, "method %s not allowed", h.req.Method)
		return
	}
	if !hasSubprotocol(h.req) {
		h.reject(http.StatusBadRequest, "subprotocol %s required", Subprotocol)
		return
	}
	token, ok := strings.CutPrefix(h.req.Header.Get("Authorization"), "Bearer ")
	if !ok || token == "" {
		h.reject(http.StatusUnauthorized, "missing bearer token")
		return
	}
	email, expiry, err := h.r.opts.Backend.Authenticate(token)
	if err != nil {
		if errors.Is(err, ErrUnauthenticated) {
			h.reject(http.StatusUnauthorized, "invalid bearer token")
		} else {
			h.reject(http.StatusInternalServerError, "authenticate: %v", err)
		}
		return
	}
	if v, ok := h.q["newWebsocket"]; ok && !isBool(v[0]) {
		h.reject(http.StatusBadRequest, "newWebsocket=%q is not a boolean", v[0])
		return
	}
	if h.reconnect {
		h.serveReconnect(email, expiry)
	} else {
		h.serveConnect(email, expiry)
	}
}

func isBool(s string) bool {
	_, err := strconv.ParseBool(s)
	return err == nil
}

func (h *handshake) upgrade() (*websocket.Conn, bool) {
	ws, err := websocket.Accept(h.w, h.req, &acceptOptions)
	if err != nil {
		// Accept has answered with an HTTP error already.
		h.r.count(func(st *Stats) { st.Rejected++ })
		h.r.log.Info("iap upgrade failed", "err", err)
		return nil, false
	}
	ws.SetReadLimit(readLimit)
	return ws, true
}

func (h *handshake) serveConnect(email string, expiry time.Time) {
	project, zone, instance := h.q.Get("project"), h.q.Get("zone"), h.q.Get("instance")
	iface := h.q.Get("interface")
	if iface == "" {
		iface = "nic0"
	}
	port, err := strconv.ParseUint(h.q.Get("port"), 10, 16)
	if project == "" || zone == "" || instance == "" || err != nil || port == 0 {
		h.reject(http.StatusBadRequest, "connect needs project, zone, instance and port 1-65535")
		return
	}
	ws, ok := h.upgrade()
	if !ok {
		return
	}
	if f, ok := h.r.refusal(instance, "connect", false); ok {
		h.refuse(ws, CloseCode(f.RefuseCode), "injected fault")
		return
	}
	t, err := h.r.opts.Backend.Resolve(project, zone, instance, iface)
	if err != nil {
		h.refuse(ws, CloseLookupFailed, err.Error())
		return
	}
	if !h.r.opts.Backend.MayTunnel(email, t) {
		h.refuse(ws, CloseNotAuthorized, email)
		return
	}
	if !t.Running {
		h.refuse(ws, CloseFailedToConnectToBackend, "instance not running")
		return
	}
	ctx, cancel := context.WithTimeout(h.r.ctx, h.r.opts.DialTimeout)
	conn, err := h.r.opts.Dial(ctx, net.JoinHostPort(t.Addr, strconv.Itoa(int(port))))
	cancel()
	if err != nil {
		h.refuse(ws, CloseFailedToConnectToBackend, err.Error())
		return
	}
	s := newSession(h.r, t, email, conn)
	l := newLink(h.r.ctx, s, ws, "connect")
	s.link = l
	h.r.mu.Lock()
	if h.r.closed {
		h.r.mu.Unlock()
		conn.Close()
		ws.Close(websocket.StatusCode(CloseGoingAway), CloseGoingAway.Reason())
		return
	}
	h.r.sessions[s.sid] = s
	h.r.stats.Connects++
	h.r.wg.Add(1)
	h.r.mu.Unlock()
	h.r.log.Info("iap session connected", "sid", s.sid, "email", email, "instance", t.Name, "port", port)
	go s.readBackend()
	if err := ws.Write(h.r.ctx, websocket.MessageBinary, AppendConnectSuccessSID(nil, s.sid)); err != nil {
		l.end(0, true)
	}
	l.run(expiry)
}

func (h *handshake) serveReconnect(email string, expiry time.Time) {
	sid, zone := h.q.Get("sid"), h.q.Get("zone")
	ack, err := strconv.ParseUint(h.q.Get("ack"), 10, 64)
	if sid == "" || zone == "" || err != nil {
		h.reject(http.StatusBadRequest, "reconnect needs sid, ack and zone")
		return
	}
	ws, ok := h.upgrade()
	if !ok {
		return
	}
	h.r.mu.Lock()
	s := h.r.sessions[sid]
	h.r.mu.Unlock()
	if s == nil {
		h.refuse(ws, CloseSIDUnknown, "unknown sid")
		return
	}
	if f, ok := h.r.refusal(s.target.Name, "reconnect", false); ok {
		h.refuse(ws, CloseCode(f.RefuseCode), "injected fault")
		return
	}
	if zone != s.target.Zone {
		h.refuse(ws, CloseLookupFailedReconnect, "zone "+zone)
		return
	}
	if !h.r.opts.Backend.MayTunnel(email, s.target) {
		h.refuse(ws, CloseNotAuthorized, email)
		return
	}
	l := newLink(h.r.ctx, s, ws, "reconnect")
	recv, code := s.attach(l, ack)
	if code != 0 {
		h.refuse(ws, code, fmt.Sprintf("ack %d", ack))
		return
	}
	h.r.count(func(st *Stats) { st.Reconnects++ })
	h.r.log.Info("iap session resumed", "sid", sid, "email", email, "ack", ack, "received", recv)
	if err := ws.Write(h.r.ctx, websocket.MessageBinary, AppendReconnectSuccessAck(nil, recv)); err != nil {
		l.end(0, true)
	}
	l.run(expiry)
}

// sessionInstance is the instance name of session sid, for fault selectors.
func (r *Relay) sessionInstance(sid string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s := r.sessions[sid]; s != nil {
		return s.target.Name
	}
	return ""
}
