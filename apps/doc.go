// Package apps is the set of mini programs wxtoken serves, and the only code
// that reads the apps file (WXTOKEN_APPS_FILE).
//
// The apps file lists each app's appid, appsecret (inline or in a
// secret_file), token_ttl and risk_check, as YAML (.yaml, .yml) or JSON
// (.json). It is decoded strictly: an unknown field, a duplicate appid or a
// bad value is an error that names the app and the field. A File serves the
// apps of the file and, while Watch runs, reloads it when it changes,
// keeping the last good apps when a change is invalid:
//
//	f, err := apps.Open(apps.Config{Path: path, MaxTokenTTL: ttl, ReloadInterval: time.Second, Logger: logger})
//	if err != nil {
//		return err // names every bad app and field
//	}
//	go f.Watch(ctx)
//	creds, ok := f.Lookup(appid)
//
// Single serves the one app of WECHAT_APPID and Dev any well-formed appid
// (dev mode). Each of the three is a handlers.Apps.
package apps
