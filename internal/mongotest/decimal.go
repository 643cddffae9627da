package mongotest

import (
	"math/big"
	"strconv"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// Decimal128 arithmetic, for $inc, $mul, $sum and the arithmetic
// expressions: when an operand is a Decimal128 the result is one, as in
// mongod, computed exactly on the coefficients.

// toDecimal returns a numeric value as a coefficient and an exponent.
func toDecimal(v bson.RawValue) (*big.Int, int, bool) {
	switch v.Type {
	case bson.TypeDecimal128:
		d := v.Decimal128()
		if d.IsNaN() || d.IsInf() != 0 {
			return nil, 0, false
		}
		bi, exp, err := d.BigInt()
		return bi, exp, err == nil
	case bson.TypeInt32, bson.TypeInt64:
		return big.NewInt(v.AsInt64()), 0, true
	case bson.TypeDouble:
		d, err := bson.ParseDecimal128(strconv.FormatFloat(v.Double(), 'g', 15, 64))
		if err != nil {
			return nil, 0, false
		}
		bi, exp, err := d.BigInt()
		return bi, exp, err == nil
	}
	return nil, 0, false
}

// decimalArith applies $inc (add) or $mul to two numbers of which one is a
// Decimal128. ok is false when an operand is NaN or infinite, or the
// result does not fit.
func decimalArith(op string, a, b bson.RawValue) (bson.RawValue, bool) {
	x, ex, okA := toDecimal(a)
	y, ey, okB := toDecimal(b)
	if !okA || !okB {
		return bson.RawValue{}, false
	}
	var r *big.Int
	var exp int
	if op == "$mul" {
		r, exp = new(big.Int).Mul(x, y), ex+ey
	} else {
		exp = min(ex, ey)
		x = new(big.Int).Mul(x, new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(ex-exp)), nil))
		y = new(big.Int).Mul(y, new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(ey-exp)), nil))
		r = new(big.Int).Add(x, y)
	}
	d, ok := bson.ParseDecimal128FromBigInt(r, exp)
	if !ok {
		return bson.RawValue{}, false
	}
	return mustValue(d), true
}

// compareDecimal compares two numbers of which one is a Decimal128
// exactly; ok is false when one is NaN or infinite.
func compareDecimal(a, b bson.RawValue) (int, bool) {
	x, ex, okA := toDecimal(a)
	y, ey, okB := toDecimal(b)
	if !okA || !okB {
		return 0, false
	}
	exp := min(ex, ey)
	x = new(big.Int).Mul(x, new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(ex-exp)), nil))
	y = new(big.Int).Mul(y, new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(ey-exp)), nil))
	return x.Cmp(y), true
}

// decimalDiv divides two numbers of which one is a Decimal128: an exact
// quotient keeps the preferred exponent of IEEE 754 (the difference of
// the operands' exponents: 24.00 / 2 is 12.00), any other is rounded to
// the 34 significant digits of a Decimal128.
func decimalDiv(a, b bson.RawValue) (bson.RawValue, bool) {
	x, ex, okA := toDecimal(a)
	y, ey, okB := toDecimal(b)
	if !okA || !okB || y.Sign() == 0 {
		return bson.RawValue{}, false
	}
	if q, r := new(big.Int).QuoRem(x, y, new(big.Int)); r.Sign() == 0 {
		if d, ok := bson.ParseDecimal128FromBigInt(q, ex-ey); ok {
			return mustValue(d), true
		}
	}
	const prec = 200
	fx := new(big.Float).SetPrec(prec).SetInt(x)
	fy := new(big.Float).SetPrec(prec).SetInt(y)
	scale := new(big.Float).SetPrec(prec).SetInt(new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(abs(ex-ey))), nil))
	q := new(big.Float).SetPrec(prec).Quo(fx, fy)
	if ex >= ey {
		q.Mul(q, scale)
	} else {
		q.Quo(q, scale)
	}
	d, err := bson.ParseDecimal128(q.Text('g', 34))
	if err != nil {
		return bson.RawValue{}, false
	}
	return mustValue(d), true
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}
