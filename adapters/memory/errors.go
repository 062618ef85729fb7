package memory

import "errors"

var errLengths = errors.New("memory: keys and increments differ in length")
