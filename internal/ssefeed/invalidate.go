package ssefeed

import (
	"encoding/json"

	"github.com/tidwall/gjson"
	"go.uber.org/zap"
)

// edgeKeyPaths are the fields of an edge envelope that name memories: its
// key, and the keys of its row images (an update may move an edge).
var edgeKeyPaths = []string{"memory_id", "memory_type", "before.memory_id", "before.memory_type", "after.memory_id", "after.memory_type"}

// invalidateMemory tells the invalidator which memories an edge event
// changed. Past events (stored before the feed subscribed) are not passed
// on: Following(true) at the subscription already dropped what they could
// make stale.
//
// Every live edge event passes here, on every pod: the fields are picked out
// with gjson, which reads only up to each of them, instead of decoding the
// whole envelope (a quarter of the time; decoding was a sixth of the
// daemon's CPU while it caught up with a backlog).
func (f *Feed) invalidateMemory(data []byte) {
	inv := f.cfg.Invalidator
	if inv == nil {
		return
	}
	r := gjson.GetManyBytes(data, edgeKeyPaths...)
	if r[0].Type != gjson.String {
		// An edge change this instance cannot attribute: drop everything
		// rather than serve what it may have changed.
		f.log.Warn("edge event without a readable memory key; the presence cache starts over", zap.Int("bytes", len(data)))
		inv.Following(true)
		return
	}
	id, typ := r[0].String(), r[1].String()
	inv.MemoryChanged(id, typ)
	for i := 2; i < len(r); i += 2 {
		if img, imgType := r[i].String(), r[i+1].String(); img != "" && (img != id || imgType != typ) {
			inv.MemoryChanged(img, imgType)
		}
	}
}

// invalidateGallery tells the invalidator which gallery a status event is
// about.
func (f *Feed) invalidateGallery(data []byte) {
	inv := f.cfg.Invalidator
	if inv == nil {
		return
	}
	var ev struct {
		GalleryID string `json:"gallery_id"`
	}
	if err := json.Unmarshal(data, &ev); err != nil || ev.GalleryID == "" {
		f.log.Warn("gallery status event without a gallery id; the presence cache starts over", zap.Error(err))
		inv.Following(true)
		return
	}
	inv.GalleryChanged(ev.GalleryID)
}
