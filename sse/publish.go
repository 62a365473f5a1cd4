package sse

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/wsbridge/wsbridge/auth"
	"github.com/wsbridge/wsbridge/broker"
	"github.com/wsbridge/wsbridge/front"
	"github.com/wsbridge/wsbridge/memory"
	"github.com/wsbridge/wsbridge/validate"
)

// PublishHandler serves POST PREFIX/<topic>: the body and its Content-Type
// go to the broker unchanged. It answers 202 with {"topic":..,"bytes":..}
// once the broker has taken the message. p admits clients (nil: everyone)
// and allows topics.
func (h *Hub) PublishHandler(prefix string, p *auth.Policy) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !admit(w, r, h.o.Origins, http.MethodPost) {
			return
		}
		topic := strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, prefix), "/")
		if topic == "" {
			topic = r.URL.Query().Get("topic")
		}
		if err := validate.Topic(topic); err != nil {
			front.Error(w, http.StatusBadRequest, err.Error())
			return
		}
		if _, ok := h.authorize(w, r, p, auth.Publish, []string{topic}); !ok {
			return
		}
		max := int64(h.o.MaxPublishBytes)
		if r.ContentLength > max {
			front.Error(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body of %d bytes exceeds the %d-byte limit", r.ContentLength, max))
			return
		}
		// A publish holds a socket and its body while it lasts: it counts
		// as a connection, takes its body's size from the memory budget,
		// and its body must arrive within BodyTimeout.
		rc := http.NewResponseController(w)
		// Against the gateway's limit only: a page that holds its address's
		// share of streams must still be able to publish.
		release, err := h.o.Conns.Add(publishing{rc}, "")
		if err != nil {
			b, _ := front.BusyFor(err)
			front.RefuseHTTP(w, b)
			return
		}
		defer release()
		hold := max
		if r.ContentLength >= 0 {
			hold = r.ContentLength
		}
		if !h.o.Budget.Take(hold) {
			w.Header().Set("Retry-After", strconv.Itoa(int(h.o.Retry.Seconds()+0.5)))
			front.Error(w, http.StatusServiceUnavailable, memory.OverBudgetReason)
			return
		}
		defer h.o.Budget.Give(hold)
		rc.SetReadDeadline(time.Now().Add(h.o.BodyTimeout))
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, max))
		if err != nil {
			var tooBig *http.MaxBytesError
			switch {
			case errors.As(err, &tooBig):
				front.Error(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body exceeds the %d-byte limit", max))
			case errors.Is(err, os.ErrDeadlineExceeded):
				front.Error(w, http.StatusRequestTimeout, fmt.Sprintf("body not received within %s (websocket.message_timeout)", h.o.BodyTimeout))
			default:
				front.Error(w, http.StatusBadRequest, "reading the body: "+err.Error())
			}
			return
		}
		// During an outage one attempt at a time goes to the broker (see
		// backendState): a crowd of publishes does not queue up behind
		// dials that each take the dial timeout to fail.
		counted, down := h.backend.begin()
		if down == nil {
			ctx, cancel := context.WithTimeout(r.Context(), h.o.PublishTimeout)
			err = h.broker.Publish(ctx, broker.Message{Topic: topic, Data: body, ContentType: r.Header.Get("Content-Type")})
			cancel()
			h.backend.end(err, counted)
		} else {
			h.backend.refused.Add(1)
			err = down
		}
		if errors.Is(err, broker.ErrTooLarge) {
			h.o.Log.Info("publish refused by the broker as too large", "topic", topic, "remote", r.RemoteAddr, "error", err.Error())
			front.Error(w, http.StatusRequestEntityTooLarge, err.Error())
			return
		}
		if err != nil {
			if outage(err) { // logged once for the outage (backendState)
				h.o.Log.Debug("publish failed", "topic", topic, "remote", r.RemoteAddr, "error", err.Error())
			} else {
				h.o.Log.Warn("publish failed", "backend", h.o.Backend, "topic", topic, "remote", r.RemoteAddr, "error", err.Error())
			}
			w.Header().Set("Retry-After", strconv.Itoa(int(h.o.Retry.Seconds()+0.5)))
			front.Error(w, http.StatusServiceUnavailable, why(err, h.o.PublishTimeout)+"; the message was not published")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		json.NewEncoder(w).Encode(struct {
			Topic string `json:"topic"`
			Bytes int    `json:"bytes"`
		}{topic, len(body)})
	})
}

// publishing is a publish in flight as the connection registry sees it:
// shutdown ends the wait for its body.
type publishing struct{ rc *http.ResponseController }

func (p publishing) GoAway(string) { p.rc.SetReadDeadline(time.Now()) }
