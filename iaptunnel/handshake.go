package iaptunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/coder/websocket"
)

// connectURL is <root>/connect with gcloud's parameters in its order.
func (c *Conn) connectURL() string {
	t := c.target
	q := "project=" + url.QueryEscape(t.Project) + "&port=" + strconv.Itoa(t.Port) +
		"&newWebsocket=True&zone=" + url.QueryEscape(t.Zone) +
		"&instance=" + url.QueryEscape(t.Instance) + "&interface=" + url.QueryEscape(t.iface())
	return strings.TrimSuffix(c.opts.URL, "/") + "/connect?" + q
}

// reconnectURL resumes sid, telling the relay how much we received.
func (c *Conn) reconnectURL(sid string, received uint64) string {
	q := "sid=" + url.QueryEscape(sid) + "&ack=" + strconv.FormatUint(received, 10) +
		"&newWebsocket=True&zone=" + url.QueryEscape(c.target.Zone)
	return strings.TrimSuffix(c.opts.URL, "/") + "/reconnect?" + q
}

// open upgrades to a WebSocket with a fresh token and reads the first
// frame, which must be the session id (connect) or the resume position
// (reconnect). Close codes become *CloseError, HTTP answers *HandshakeError.
//
// The returned corkConn, when not nil, is the WebSocket's TCP connection
// for the sender to batch frames on.
func (c *Conn) open(ctx context.Context, u string, reconnect bool) (*websocket.Conn, *corkConn, frame, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.ConnectTimeout)
	defer cancel()
	tok, err := c.opts.TokenSource.Token()
	if err != nil {
		return nil, nil, frame{}, fmt.Errorf("getting an access token for IAP: %w", err)
	}
	c.tokenFetches.Add(1)
	h := http.Header{}
	h.Set("Authorization", tok.Type()+" "+tok.AccessToken)
	h.Set("Origin", Origin)
	h.Set("User-Agent", c.opts.UserAgent)
	var cork *corkConn
	ws, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{
		HTTPClient: corkingClient(c.opts.HTTPClient, &cork), HTTPHeader: h, Subprotocols: []string{Subprotocol},
		CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			var body []byte
			if resp.Body != nil {
				body, _ = io.ReadAll(io.LimitReader(resp.Body, 1024))
			}
			return nil, nil, frame{}, &HandshakeError{Status: resp.StatusCode, Body: string(body)}
		}
		if ctx.Err() != nil {
			return nil, nil, frame{}, errConnectTimeout
		}
		return nil, nil, frame{}, fmt.Errorf("connecting to IAP: %w", err)
	}
	ws.SetReadLimit(readLimit)
	typ, msg, err := ws.Read(ctx)
	if err != nil {
		ws.CloseNow()
		if code := int(websocket.CloseStatus(err)); code != -1 {
			return nil, nil, frame{}, c.closeError(code, closeReason(err))
		}
		if ctx.Err() != nil {
			return nil, nil, frame{}, errConnectTimeout
		}
		return nil, nil, frame{}, fmt.Errorf("waiting for IAP to open the tunnel: %w", err)
	}
	f, err := decodeFrame(msg)
	want, name := tagConnectSuccessSID, "CONNECT_SUCCESS_SID"
	if reconnect {
		want, name = tagReconnectSuccessAck, "RECONNECT_SUCCESS_ACK"
	}
	switch {
	case typ != websocket.MessageBinary:
		err = &ProtocolError{Msg: "first message is not binary"}
	case err != nil:
		err = &ProtocolError{Msg: err.Error()}
	case f.tag != want:
		err = &ProtocolError{Msg: fmt.Sprintf("first frame has tag %d, want %s", f.tag, name)}
	case !reconnect && f.sid == "":
		err = &ProtocolError{Msg: "empty session id"}
	}
	if err != nil {
		ws.Close(websocket.StatusProtocolError, "protocol violation")
		return nil, nil, frame{}, err
	}
	return ws, cork, f, nil
}

func (c *Conn) closeError(code int, reason string) error {
	return &CloseError{Code: code, Reason: reason, Target: c.target, Account: c.opts.Account}
}

func closeReason(err error) string {
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Reason
	}
	return ""
}
