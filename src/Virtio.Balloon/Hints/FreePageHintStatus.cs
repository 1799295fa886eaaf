namespace Virtio.Balloon.Hints;

/// <summary>Where the balloon device is in a free page hint report (the host side's state machine).</summary>
public enum FreePageHintStatus
{
    /// <summary>No report was requested since the device was created or reset; the config reads STOP.</summary>
    Idle = 0,

    /// <summary>The VMM requested a report: the config holds the new id and the driver was notified.</summary>
    Requested,

    /// <summary>The driver started the report with the current id: hints are applied to the sink.</summary>
    Reporting,

    /// <summary>The report ended (the VMM stopped it, or the driver sent STOP); hints arriving now are ignored.</summary>
    Stopped,

    /// <summary>The VMM is done with the hints (DONE): the driver gives the hinted blocks back.</summary>
    Done,
}
