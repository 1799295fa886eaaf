using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;

namespace Virtio.Benchmarks;

/// <summary>
/// Two jobs in one run: as shipped (EventSources and meters compiled in, nobody listening), and with both removed
/// by the runtime's feature switches (<c>EventSourceSupport=false</c>, <c>MetricsSupport=false</c>: every
/// <c>IsEnabled</c> and <c>Enabled</c> check becomes a constant false). The ratio between them is the cost of the
/// telemetry when nobody listens. Use with <c>--job short</c> or the default job; the two jobs are added here.
/// </summary>
public sealed class TelemetryCostConfig : ManualConfig
{
    public TelemetryCostConfig()
    {
        AddJob(Job.ShortRun.WithId("telemetry-compiled-in").AsBaseline());
        AddJob(Job.ShortRun.WithId("telemetry-removed").WithArguments([new MsBuildArgument("/p:EventSourceSupport=false"), new MsBuildArgument("/p:MetricsSupport=false")]));
        AddColumn(new VectorHardwareColumn());
    }
}
