using System.Collections.Generic;
using System.Diagnostics.Metrics;

namespace Virtio.Balloon.Diagnostics;

/// <summary>
/// The balloon's metrics (meter <c>Virtio.Balloon</c>), for dotnet-counters, OpenTelemetry or any MeterListener:
/// pages inflated and deflated, free page hints received (blocks and pages), messages refused by reason, and the
/// duration of hint reports. Created from the VMM's <see cref="IMeterFactory"/> when it gives one
/// (<c>BalloonDeviceOptions.MeterFactory</c>), else one shared meter. Recorded once per request or report; an
/// instrument nobody listens to costs a field read.
/// </summary>
public sealed class BalloonMetrics
{
    /// <summary>The meter's name.</summary>
    public const string MeterName = "Virtio.Balloon";

    private static readonly Meter SharedMeter = new(MeterName);
    private static BalloonMetrics? s_shared;

    private BalloonMetrics(Meter meter)
    {
        PagesInflated = meter.CreateCounter<long>("virtio.balloon.pages.inflated", "{page}", "Pages the guest put into the balloon.");
        PagesDeflated = meter.CreateCounter<long>("virtio.balloon.pages.deflated", "{page}", "Pages the guest took back from the balloon.");
        HintBlocks = meter.CreateCounter<long>("virtio.balloon.hint.blocks", "{block}", "Free page hint blocks applied to the sink.");
        HintPages = meter.CreateCounter<long>("virtio.balloon.hint.pages", "{page}", "Pages of free page hints applied to the sink.");
        MessagesRefused = meter.CreateCounter<long>("virtio.balloon.messages.refused", "{message}", "Guest messages refused, by reason.");
        ReportDuration = meter.CreateHistogram<double>("virtio.balloon.hint.report.duration", "ms", "From the request of a hint report to its end.");
    }

    /// <summary>Pages inflated.</summary>
    public Counter<long> PagesInflated { get; }

    /// <summary>Pages deflated.</summary>
    public Counter<long> PagesDeflated { get; }

    /// <summary>Hint blocks applied.</summary>
    public Counter<long> HintBlocks { get; }

    /// <summary>Hinted pages applied.</summary>
    public Counter<long> HintPages { get; }

    /// <summary>Refused messages, tagged <c>reason</c>.</summary>
    public Counter<long> MessagesRefused { get; }

    /// <summary>Report durations in milliseconds.</summary>
    public Histogram<double> ReportDuration { get; }

    /// <summary>The metrics on <paramref name="factory"/>'s meter, or the shared ones.</summary>
    public static BalloonMetrics For(IMeterFactory? factory) =>
        factory is null ? s_shared ??= new BalloonMetrics(SharedMeter) : new BalloonMetrics(factory.Create(MeterName));

    /// <summary>Counts a refused message (tag: the reason).</summary>
    internal void Refused(BalloonMessageError reason)
    {
        if (MessagesRefused.Enabled)
        {
            MessagesRefused.Add(1, new KeyValuePair<string, object?>("reason", reason.ToString()));
        }
    }
}
