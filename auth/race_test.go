//go:build race

package auth

// The race detector slows hashing about twelvefold: timing tests use
// cheaper hashes under it, as what they compare is ratios.
const raceEnabled = true
