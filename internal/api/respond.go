package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
)

// apiError is an answer with a status and the contract's error shape.
type apiError struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

func badRequest(msg string) *apiError {
	return &apiError{Status: http.StatusBadRequest, Code: "bad_request", Message: msg}
}

func notFound(msg string) *apiError {
	return &apiError{Status: http.StatusNotFound, Code: "not_found", Message: msg}
}

func tooLarge(limit int64) *apiError {
	return &apiError{Status: http.StatusRequestEntityTooLarge, Code: "too_large", Message: "request body is larger than " + itoa(limit) + " bytes"}
}

func unavailable(msg string) *apiError {
	return &apiError{Status: http.StatusServiceUnavailable, Code: "unavailable", Message: msg}
}

func internalError() *apiError {
	return &apiError{Status: http.StatusInternalServerError, Code: "internal", Message: "internal error; see the server log for the request id"}
}

func itoa(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	_ = enc.Encode(v) // the client went away: nothing left to tell it
}

func writeError(w http.ResponseWriter, e *apiError) {
	writeJSON(w, e.Status, struct {
		Error *apiError `json:"error"`
	}{e})
}

// fail answers err: an *apiError as itself, a timeout as 503, anything else
// as 500 (logged by the caller's access log with the request id).
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	var ae *apiError
	if errors.As(err, &ae) {
		writeError(w, ae)
		return
	}
	if ctxErr := r.Context().Err(); ctxErr != nil {
		// The handler deadline passed (or the client left): not a server bug.
		if errors.Is(ctxErr, context.DeadlineExceeded) {
			writeError(w, &apiError{Status: http.StatusServiceUnavailable, Code: "timeout", Message: "the request took longer than the handler deadline"})
		}
		return
	}
	s.log.Error("request failed", requestField(r), errField(err))
	writeError(w, internalError())
}
