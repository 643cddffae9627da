package ent

// This file is not generated: it is the glue a user of txnent adds to their
// own generated package (the README shows it). Being in the package, it can
// copy the client's unexported configuration, so that the bound client keeps
// the hooks, interceptors and debug logging of the original.

import "entgo.io/ent/dialect"

// BindDriver returns a client like c whose statements go to drv, such as the
// *txnent.Tx of a Run's attempt.
func (c *Client) BindDriver(drv dialect.Driver) *Client {
	cfg := c.config
	cfg.driver = drv
	if cfg.debug {
		cfg.driver = dialect.Debug(drv, cfg.log)
	}
	bound := &Client{config: cfg}
	bound.init()
	return bound
}
