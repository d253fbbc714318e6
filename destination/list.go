package destination

import (
	"context"
	"fmt"
)

// List returns the project's running instances, each with its switches
// (instance metadata over the project's), in one aggregatedList call plus
// at most one project read. The agent uses it to learn which host keys
// belong to which VM before any connection names one.
func (r *Resolver) List(ctx context.Context, project string) ([]*Instance, error) {
	if project == "" {
		project = r.project
	}
	n := Name{Project: project}
	list, err := r.api.aggregated(ctx, project, "status = RUNNING")
	if err != nil {
		return nil, fmt.Errorf("list the instances of project %s: %w", project, explain(err, n))
	}
	var proj metadataJSON
	needProject := false
	for i := range list {
		needProject = needProject || list[i].Metadata.needsProject()
	}
	if needProject {
		p, err := r.api.project(ctx, project)
		if err != nil {
			return nil, fmt.Errorf("read project %s's common instance metadata: %w", project, explain(err, n))
		}
		proj = p.CommonInstanceMetadata
	}
	out := make([]*Instance, 0, len(list))
	for i := range list {
		in, err := instanceFrom(project, &list[i])
		if err != nil {
			return nil, err
		}
		in.Switches = effectiveSwitches(list[i].Metadata, proj)
		out = append(out, in)
	}
	return out, nil
}
