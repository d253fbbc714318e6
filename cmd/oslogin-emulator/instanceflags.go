package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
)

// Flags that describe the project's VMs, so a test or a person can set up
// several instances without writing a configuration file:
//
//	--instance NAME[,zone=Z][,id=N][,ip=IP][,nat=IP][,status=S][,sa=EMAIL|none]
//	           [,scope=SCOPE]...[,oslogin=BOOL][,certificates=BOOL][,guest-attributes=BOOL]
//	--project-metadata KEY=VALUE
//	--grant EMAIL=INSTANCE:ROLE[+ROLE...]   ROLE: login, admin-login, iap-tunnel
//	--compute-viewer EMAIL
//
// The boolean options set the instance's enable-oslogin,
// enable-oslogin-certificates and enable-guest-attributes metadata items
// to TRUE or FALSE; left out, the project's metadata decides, as on GCE.

// instanceSwitches maps the metadata switches of --instance to their keys.
var instanceSwitches = map[string]string{
	"oslogin":          emulator.MetaEnableOSLogin,
	"certificates":     emulator.MetaEnableCertificates,
	"guest-attributes": emulator.MetaEnableGuestAttrs,
}

const instanceOptionNames = "zone, id, ip, nat, status, sa, scope, oslogin, certificates, guest-attributes"

// parseInstanceFlag reads one --instance value. Values are checked here only
// for shape; the emulator's configuration check judges names, zones and
// addresses, so the flag and the JSON file accept the same things.
func parseInstanceFlag(v string) (emulator.Instance, error) {
	fields := strings.Split(v, ",")
	in := emulator.Instance{Name: strings.TrimSpace(fields[0])}
	if in.Name == "" || strings.Contains(in.Name, "=") {
		return in, fmt.Errorf("--instance %q: want NAME[,KEY=VALUE...], the name first", v)
	}
	seen := map[string]bool{}
	for _, f := range fields[1:] {
		key, val, ok := strings.Cut(f, "=")
		key = strings.TrimSpace(key)
		if !ok || key == "" {
			return in, fmt.Errorf("--instance %s: %q is not KEY=VALUE", in.Name, f)
		}
		if seen[key] && key != "scope" {
			return in, fmt.Errorf("--instance %s: %s given twice", in.Name, key)
		}
		seen[key] = true
		switch key {
		case "zone":
			in.Zone = val
		case "id":
			in.ID = val
		case "ip":
			in.NetworkIP = val
		case "nat":
			in.NatIP = val
		case "status":
			in.Status = strings.ToUpper(val)
		case "sa":
			if val == "none" {
				in.NoServiceAccount = true
			} else {
				in.ServiceAccount = val
			}
		case "scope":
			if !strings.Contains(val, "/") {
				val = "https://www.googleapis.com/auth/" + val // short form: compute.readonly
			}
			if !slices.Contains(in.Scopes, val) {
				in.Scopes = append(in.Scopes, val)
			}
		default:
			meta, known := instanceSwitches[key]
			if !known {
				return in, fmt.Errorf("--instance %s: unknown option %q (known: %s)", in.Name, key, instanceOptionNames)
			}
			b, err := strconv.ParseBool(val)
			if err != nil {
				return in, fmt.Errorf("--instance %s: %s=%q is not a boolean", in.Name, key, val)
			}
			if in.Metadata == nil {
				in.Metadata = map[string]string{}
			}
			in.Metadata[meta] = strings.ToUpper(strconv.FormatBool(b))
		}
	}
	return in, nil
}

// instanceGrantRoles maps --grant role names to the grant they set.
var instanceGrantRoles = map[string]func(*emulator.InstanceGrant){
	"login":       func(g *emulator.InstanceGrant) { g.Login = true },
	"admin-login": func(g *emulator.InstanceGrant) { g.Login, g.AdminLogin = true, true },
	"iap-tunnel":  func(g *emulator.InstanceGrant) { g.IAPTunnel = true },
}

// applyGrantFlag adds one --grant EMAIL=INSTANCE:ROLE[+ROLE] to the
// instance it names (NAME or ZONE/NAME) among cfg.Instances.
func applyGrantFlag(cfg *emulator.Config, v string) error {
	email, rest, ok := strings.Cut(v, "=")
	ref, roles, ok2 := strings.Cut(rest, ":")
	if !ok || !ok2 || email == "" || ref == "" || roles == "" {
		return fmt.Errorf("--grant %q: want EMAIL=INSTANCE:ROLE[+ROLE...], ROLE login, admin-login or iap-tunnel", v)
	}
	zone, name, zoned := strings.Cut(ref, "/")
	if !zoned {
		zone, name = "", ref
	}
	var target *emulator.Instance
	for i := range cfg.Instances {
		in := &cfg.Instances[i]
		if in.Name == name && (zone == "" || in.Zone == zone || in.Zone == "" && zone == cfg.Zone) {
			if target != nil {
				return fmt.Errorf("--grant %q: instance %s is in several zones; write ZONE/%s", v, name, name)
			}
			target = in
		}
	}
	if target == nil {
		return fmt.Errorf("--grant %q: no instance %s (define it with --instance)", v, ref)
	}
	var g emulator.InstanceGrant
	for _, r := range strings.Split(roles, "+") {
		set, known := instanceGrantRoles[r]
		if !known {
			return fmt.Errorf("--grant %q: unknown role %q (want login, admin-login or iap-tunnel)", v, r)
		}
		set(&g)
	}
	if target.Grants == nil {
		target.Grants = map[string]emulator.InstanceGrant{}
	}
	old := target.Grants[email]
	target.Grants[email] = emulator.InstanceGrant{Login: old.Login || g.Login,
		AdminLogin: old.AdminLogin || g.AdminLogin, IAPTunnel: old.IAPTunnel || g.IAPTunnel}
	return nil
}
