package eip712

import (
	"github.com/decred/dcrd/dcrec/secp256k1/v4"
)

// A KeyTable window is keyTableBits bits of the scalar: keyTableWindows
// rows of keyTableRow points, every nonzero multiple d·2^(8i)·Q of the
// key Q, so that a scalar multiplication by Q is at most one point
// addition per byte of the scalar, as decred's precomputed
// multiplication by the generator is.
const (
	keyTableBits    = 8
	keyTableWindows = 256 / keyTableBits
	keyTableRow     = 1<<keyTableBits - 1
)

// KeyTableBytes is the memory one KeyTable holds, about 650 KB.
const KeyTableBytes = keyTableWindows * keyTableRow * 80

// affinePoint is a curve point with z = 1 (x and y normalized).
type affinePoint struct{ x, y secp256k1.FieldVal }

// KeyTable is one public key with its multiples precomputed, for checking
// that a signature was made by that key without recovering the signer: a
// check costs two table-driven scalar multiplications, against one such
// and one general multiplication plus a square root for a recovery, about
// a third of a recovery's time. Building one costs about 8,000 point
// additions (some hundred recoveries), so it pays only for a key that
// signs often, as a payment channel's payer authorizer does. It is
// immutable and safe for concurrent use.
type KeyTable struct {
	address string
	rows    [keyTableWindows][keyTableRow]affinePoint
}

// NewKeyTable precomputes the table of pub.
func NewKeyTable(pub *secp256k1.PublicKey) *KeyTable {
	t := &KeyTable{address: PublicKeyAddress(pub)}
	var base secp256k1.JacobianPoint
	pub.AsJacobian(&base)
	// Jacobian multiples first, then one batched conversion to affine.
	pts := make([]secp256k1.JacobianPoint, keyTableWindows*keyTableRow)
	for i := 0; i < keyTableWindows; i++ {
		row := pts[i*keyTableRow : (i+1)*keyTableRow]
		row[0].Set(&base)
		for j := 1; j < keyTableRow; j++ {
			secp256k1.AddNonConst(&row[j-1], &base, &row[j])
		}
		for k := 0; k < keyTableBits; k++ {
			secp256k1.DoubleNonConst(&base, &base)
		}
	}
	// Montgomery's trick: one field inversion for all the z values.
	prefix := make([]secp256k1.FieldVal, len(pts))
	var acc secp256k1.FieldVal
	acc.SetInt(1)
	for i := range pts {
		prefix[i].Set(&acc)
		acc.Mul(&pts[i].Z)
	}
	acc.Inverse() // 1 / (z0 z1 ... zn)
	for i := len(pts) - 1; i >= 0; i-- {
		var zInv, zInv2 secp256k1.FieldVal
		zInv.Mul2(&acc, &prefix[i]) // 1 / zi
		acc.Mul(&pts[i].Z)          // 1 / (z0 ... z(i-1))
		zInv2.SquareVal(&zInv)
		p := &t.rows[i/keyTableRow][i%keyTableRow]
		p.x.Mul2(&pts[i].X, &zInv2).Normalize()
		p.y.Mul2(&pts[i].Y, zInv2.Mul(&zInv)).Normalize()
	}
	return t
}

// Address returns the EIP-55 address of the table's key.
func (t *KeyTable) Address() string { return t.address }

// mult sets result to k·Q.
func (t *KeyTable) mult(k *secp256k1.ModNScalar, result *secp256k1.JacobianPoint) {
	result.X.Zero()
	result.Y.Zero()
	result.Z.Zero()
	kb := k.Bytes()
	var q secp256k1.JacobianPoint
	q.Z.SetInt(1)
	for i := 0; i < keyTableWindows; i++ {
		d := kb[len(kb)-1-i]
		if d == 0 {
			continue
		}
		p := &t.rows[i][d-1]
		q.X.Set(&p.x)
		q.Y.Set(&p.y)
		secp256k1.AddNonConst(result, &q, result)
	}
}

// Verify reports whether the 65-byte Ethereum signature (r || s || v, v
// in {27, 28} or {0, 1}) over digest is the table key's: exactly when
// RecoverSigner would return its address (a high s, a zero or
// out-of-range r or s, and another v are refused the same way).
//
// With w = 1/s it checks that R' = (e·w)·G + (r·w)·Q has x = r and the y
// parity v names. Recovery computes Q' = (s·R - e·G)/r for the point R
// with that x and parity, so Q' = Q exactly when s·R = e·G + r·Q, that
// is when R' = R.
func (t *KeyTable) Verify(digest [32]byte, sig []byte) bool {
	if len(sig) != 65 {
		return false
	}
	v := sig[64]
	if v < 27 {
		v += 27
	}
	if v != 27 && v != 28 {
		return false
	}
	var r, s, e secp256k1.ModNScalar
	if overflow := r.SetByteSlice(sig[:32]); overflow || r.IsZero() {
		return false
	}
	if overflow := s.SetByteSlice(sig[32:64]); overflow || s.IsZero() || s.IsOverHalfOrder() {
		return false
	}
	e.SetByteSlice(digest[:])
	var w, u1, u2 secp256k1.ModNScalar
	w.InverseValNonConst(&s)
	u1.Mul2(&e, &w)
	u2.Mul2(&r, &w)
	var p1, p2, sum secp256k1.JacobianPoint
	secp256k1.ScalarBaseMultNonConst(&u1, &p1)
	t.mult(&u2, &p2)
	secp256k1.AddNonConst(&p1, &p2, &sum)
	if (sum.X.IsZero() && sum.Y.IsZero()) || sum.Z.IsZero() {
		return false
	}
	sum.ToAffine()
	var rx secp256k1.FieldVal
	rx.SetByteSlice(sig[:32]) // r < n < p: no reduction
	rx.Normalize()
	return sum.X.Equals(&rx) && sum.Y.IsOdd() == (v == 28)
}
