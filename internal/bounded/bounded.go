// Package bounded reads small files an operator points wxtoken at (the apps
// file, appsecret files) without ever blocking or reading without limit.
package bounded

import (
	"fmt"
	"io"
	"os"
	"syscall"
)

// ReadFile reads at most limit bytes of path; a larger file is an error.
//
// It opens with O_NONBLOCK and checks the opened file is a regular one, so a
// FIFO (or a device) put at the path can never block start-up or a reload
// watcher. Errors from opening the file pass through, for errors.Is.
func ReadFile(path string, limit int64) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is over %d bytes", path, limit)
	}
	return b, nil
}
